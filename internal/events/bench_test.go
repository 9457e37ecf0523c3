package events_test

import (
	"testing"

	"github.com/go-json-experiment/json"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
)

// BenchmarkDecode measures strict decoding and validation of realistic
// events, the ingester's per-message CPU cost.
func BenchmarkDecode(b *testing.B) {
	g := gen.New(1, nil, nil)
	payloads := make([][]byte, 1024)
	size := 0
	for i := range payloads {
		p, err := json.Marshal(g.Next())
		if err != nil {
			b.Fatal(err)
		}
		payloads[i] = p
		size += len(p)
	}
	dec := events.NewDecoder(events.Limits{})
	b.SetBytes(int64(size / len(payloads)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := dec.Decode(payloads[i%len(payloads)]); err != nil {
			b.Fatal(err)
		}
	}
}
