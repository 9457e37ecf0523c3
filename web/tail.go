package web

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/store"
)

// Live tail limits.
const (
	tailOverlap   = 5 * time.Second  // re-read window for rows stored out of order
	tailRecheck   = 30 * time.Second // how often access is checked again
	tailHeartbeat = 15 * time.Second
	tailMaxLife   = time.Hour // the browser reconnects after this
)

// tail streams decisions as they are stored, as server-sent events whose
// data is a rendered table row. It passes the same access check and tier
// range limit as the list, checks access again every tailRecheck, and
// resumes from the Last-Event-ID the browser sends when it reconnects.
// Each poll takes one of the project's query slots for its query only.
func (s *server) tail(w http.ResponseWriter, r *http.Request) error {
	sc, f, loc, _, err := s.listRequest(r, authz.ListTraces)
	if err != nil {
		return err
	}
	project := sc.Project()
	sessions, err := s.allowed(r.Context(), authz.ViewSession, authz.KindProject, project, "")
	if err != nil {
		return err
	}
	floor := uint64(time.Now().UnixMilli())
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		v, err := strconv.ParseUint(id, 10, 64)
		if err != nil || v > floor || floor-v > uint64(tailMaxLife/time.Millisecond) {
			return badParam("Last-Event-ID", "is not a live tail position")
		}
		floor = v
	}

	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: 2000\n\n")
	if err := rc.Flush(); err != nil {
		return nil
	}

	ctx, cancel := context.WithTimeout(r.Context(), tailMaxLife)
	defer cancel()
	t := tailer{s: s, f: f, loc: loc, project: project, sc: sc, sessions: sessions, floor: floor,
		cursor: floor, seen: map[string]uint64{}}
	tick := time.NewTicker(s.TailInterval)
	defer tick.Stop()
	lastCheck, lastWrite := time.Now(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if time.Since(lastCheck) >= tailRecheck {
			if !s.stillAllowed(ctx, r, project) {
				fmt.Fprintf(w, "event: end\ndata: access ended\n\n")
				_ = rc.Flush()
				return nil
			}
			lastCheck = time.Now()
		}
		n, err := t.poll(ctx, w)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.WarnContext(ctx, "live tail poll", "project", project, "err", err)
			fmt.Fprintf(w, "event: problem\ndata: the live tail paused; retrying\n\n")
		}
		if n == 0 && time.Since(lastWrite) < tailHeartbeat {
			continue
		}
		if n == 0 {
			fmt.Fprintf(w, ": ping\n\n")
		}
		lastWrite = time.Now()
		if err := rc.Flush(); err != nil {
			return nil
		}
	}
}

// stillAllowed verifies the session token and the list permission again,
// so that an expired token or a changed policy ends the stream.
func (s *server) stillAllowed(ctx context.Context, r *http.Request, project string) bool {
	v, ok := r.Context().Value(viewerKey{}).(viewerCtx)
	if !ok {
		return false
	}
	p, err := s.Verifier.Verify(ctx, v.token)
	if err != nil || p == nil {
		return false
	}
	v.p = p
	ctx = context.WithValue(ctx, viewerKey{}, v)
	_, err = s.authorize(ctx, authz.ListTraces, authz.KindProject, project, "")
	return err == nil
}

// tailer remembers what a live tail has sent.
type tailer struct {
	s       *server
	f       filter.Filter
	loc     *time.Location
	project string
	sc      store.Scope
	// sessions says whether rows may link to the session page.
	sessions bool
	floor    uint64            // the stream's start; nothing stored before is new
	cursor   uint64            // the newest ingested_at sent
	seen     map[string]uint64 // event ids sent within the overlap window
}

// poll sends the decisions stored since the last poll and returns how many.
func (t *tailer) poll(ctx context.Context, w http.ResponseWriter) (int, error) {
	f := t.f
	now := t.s.Now()
	if f.Preset != "" {
		// A relative range moves with the clock and stays open at the end.
		for _, p := range filter.Presets {
			if p.Name == f.Preset {
				f.From, f.To = now.Add(-p.Dur), time.Time{}
			}
		}
	}
	since := t.floor
	if overlap := uint64(tailOverlap / time.Millisecond); t.cursor > t.floor+overlap {
		since = t.cursor - overlap
	}
	// Each poll is a query of the project: it takes a query slot, and
	// skips its turn when all are busy; the next poll catches up.
	done, err := t.s.beginQuery(t.sc)
	if err != nil {
		return 0, nil
	}
	qctx, cancel := context.WithTimeout(ctx, t.s.QueryTimeout)
	defer cancel()
	arrivals, err := t.s.Store.Arrivals(qctx, t.sc, f, since, 0)
	done()
	if err != nil {
		return 0, err
	}
	n := 0
	var buf bytes.Buffer
	for _, a := range arrivals {
		if _, dup := t.seen[a.EventID]; dup {
			continue
		}
		t.seen[a.EventID] = a.IngestedAt
		t.cursor = max(t.cursor, a.IngestedAt)
		buf.Reset()
		row := traceRow(t.project, a.Decision, t.loc, now)
		if !t.sessions {
			row.SessionHref = ""
		}
		if err := traceRowView(row).Render(ctx, &buf); err != nil {
			return n, fmt.Errorf("render live row: %w", err)
		}
		fmt.Fprintf(w, "id: %d\nevent: decision\n", t.cursor)
		for line := range strings.SplitSeq(buf.String(), "\n") {
			fmt.Fprintf(w, "data: %s\n", line)
		}
		fmt.Fprint(w, "\n")
		n++
	}
	for id, at := range t.seen {
		if at+uint64(2*tailOverlap/time.Millisecond) < t.cursor {
			delete(t.seen, id)
		}
	}
	return n, nil
}
