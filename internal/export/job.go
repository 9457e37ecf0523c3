package export

import (
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/store"
)

// Statements of the manifest, also shown in the UI.
const (
	RangeNote = "UTC; from is inclusive, to is exclusive"
	BoundNote = "only rows stored (ingested_at) at or before this time are in the file; " +
		"rows stored later are left out even if they fall in the range"
	OrderNote = "occurred_at, then event_id, ascending; each event_id once"
)

// FilterQuery is the filter as a query string without its time range, in
// the syntax of the traces page and of the CLI's --query.
func FilterQuery(f filter.Filter) string {
	q := f.Values()
	q.Del("range")
	q.Del("from")
	q.Del("to")
	return q.Encode()
}

func (j *Job) record() store.ExportRecord {
	return store.ExportRecord{ExportID: j.ID, StartedAt: j.StartedAt, Actor: j.Actor,
		Format: string(j.Format), Gzip: j.Gzip, Filter: FilterQuery(j.Filter),
		From: j.Filter.From, To: j.Filter.To, StoredBy: j.StoredBy, Status: store.ExportStarted}
}

func (j *Job) manifest(rows, size int64, sum string) Manifest {
	return Manifest{
		Version: ManifestVersion, ExportID: j.ID,
		AccountID: j.Scope.Account(), ProjectID: j.Scope.Project(),
		Format: j.Format, Gzip: j.Gzip, FileName: j.FileName, Filter: FilterQuery(j.Filter),
		Range: Range{From: formatTime(j.Filter.From), To: formatTime(j.Filter.To),
			Note: RangeNote},
		UpperBound:      Bound{StoredBy: formatTime(j.StoredBy), Note: BoundNote},
		Order:           OrderNote,
		ContentPreviews: j.ContentPreviews,
		Rows:            rows, Bytes: size, SHA256: sum,
		ExportedAt: formatTime(j.StartedAt), ExportedBy: j.Actor,
	}
}
