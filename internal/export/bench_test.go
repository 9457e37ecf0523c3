package export

import (
	"fmt"
	"io"
	"testing"

	"github.com/go-json-experiment/json"

	"github.com/guardwatch/observatory/internal/gen"
)

// benchChunks returns chunks of generated events stored as the ingester
// stores them, for the encoders' benchmarks.
func benchChunks(b *testing.B, n int) ([]*chunk, int64) {
	b.Helper()
	tn := gen.Tenant{Account: "acme", Project: "proj_prod"}
	g := gen.New(11, []gen.Tenant{tn}, nil)
	var out []*chunk
	var size int64
	for i := 0; i < n; i += chunkRows {
		c := &chunk{}
		c.reset()
		for j := i; j < min(i+chunkRows, n); j++ {
			raw, err := json.Marshal(g.NextFor(tn), json.Deterministic(true))
			if err != nil {
				b.Fatal(err)
			}
			c.add(fmt.Appendf(nil, "bench-%09d", j), raw)
			size += int64(len(raw))
		}
		c.seal()
		out = append(out, c)
	}
	return out, size
}

func benchEncoder(b *testing.B, enc encoder) {
	chunks, size := benchChunks(b, 4*chunkRows)
	var ws workerState
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for _, c := range chunks {
			c.out = c.out[:0]
			if err := enc.encode(c, &ws); err != nil {
				b.Fatal(err)
			}
			if err := enc.write(c); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*4*chunkRows), "ns/row")
}

func BenchmarkEncodeCSV(b *testing.B) {
	enc, err := newCSVEncoder(io.Discard, true)
	if err != nil {
		b.Fatal(err)
	}
	benchEncoder(b, enc)
}

func BenchmarkEncodeNDJSON(b *testing.B) {
	benchEncoder(b, &ndjsonEncoder{out: io.Discard, previews: true})
}

func BenchmarkEncodeParquet(b *testing.B) {
	benchEncoder(b, newParquetEncoder(io.Discard, true, nil))
}

func BenchmarkFlatten(b *testing.B) {
	chunks, size := benchChunks(b, 4*chunkRows)
	var fl flattener
	var r flatRow
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for _, c := range chunks {
			for _, raw := range c.raws {
				fl.arena = fl.arena[:0]
				if err := fl.flatten(raw, &r); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

func BenchmarkCompactJSON(b *testing.B) {
	chunks, size := benchChunks(b, chunkRows)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		for _, raw := range chunks[0].raws {
			if !compactJSON(raw) {
				b.Fatal("not compact")
			}
		}
	}
}
