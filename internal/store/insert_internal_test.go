package store

import (
	"testing"

	"github.com/go-json-experiment/json"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
)

type discard struct{ n int }

func (d *discard) Append(v ...any) error { d.n += len(v); return nil }

// BenchmarkAppendEvent measures the client side of building an insert
// block: flattening one event into its columns and encoding its raw JSON.
func BenchmarkAppendEvent(b *testing.B) {
	g := gen.New(1, nil, nil)
	dec := events.NewDecoder(events.Limits{})
	evs := make([]*events.Event, 1024)
	for i := range evs {
		raw, err := json.Marshal(g.Next())
		if err != nil {
			b.Fatal(err)
		}
		if evs[i], err = dec.Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
	var d discard
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := appendEvent(&d, evs[i%len(evs)], 1); err != nil {
			b.Fatal(err)
		}
	}
}
