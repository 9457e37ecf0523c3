package store

import (
	"testing"

	"github.com/go-json-experiment/json"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
)

// BenchmarkAppendEvent measures the client side of building an insert
// block: flattening one event into its columns, 5,000 rows a block.
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
	cols := newBlock(5000)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%5000 == 0 {
			cols = newBlock(5000)
		}
		if err := cols.add(evs[i%len(evs)], 1); err != nil {
			b.Fatal(err)
		}
	}
}
