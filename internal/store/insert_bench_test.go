package store_test

import (
	"testing"

	"github.com/go-json-experiment/json"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/testenv"
)

// BenchmarkInsert measures batch inserts of realistic decoded events into
// a real ClickHouse, 5,000 rows a batch; rows/s is reported per run.
func BenchmarkInsert(b *testing.B) {
	addr := testenv.ClickHouse(b)
	db, err := store.Open(b.Context(), store.Config{Addr: addr,
		Database: testenv.Database(b, addr)})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()

	g := gen.New(1, nil, nil)
	dec := events.NewDecoder(events.Limits{})
	batch := make([]*events.Event, 20000)
	for i := range batch {
		raw, _ := json.Marshal(g.Next())
		if batch[i], err = dec.Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if err := db.Insert(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "rows/s")
}
