// Command bench measures the pipeline on this machine against its physical
// limits, each figure next to the limits measured in the same run.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"

	"github.com/alecthomas/kong"
)

type cli struct {
	ClickHouseAddr string `name:"clickhouse-addr" env:"GUARD_CLICKHOUSE_ADDR" default:"127.0.0.1:9000" help:"ClickHouse native address."`

	Ingest  ingestCmd  `cmd:"" help:"Ingest throughput: end to end, consume-only and insert-only."`
	Export  exportCmd  `cmd:"" help:"Export throughput and peak RSS per format of one large project."`
	Alerts  alertsCmd  `cmd:"" help:"Alert latency, publish to webhook, under background traffic."`
	Queries queriesCmd `cmd:"" help:"UI page server time of one project while a neighbour project grows."`
}

func main() {
	var c cli
	ctx := kong.Parse(&c, kong.Description("Pipeline benchmarks."))
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr,
		&slog.HandlerOptions{Level: slog.LevelWarn})))
	fmt.Printf("machine: %d cores, %s\n", runtime.NumCPU(), memTotal())
	ctx.FatalIfErrorf(ctx.Run(&c))
}

// summary prints one line of the run's summary table: what was measured,
// the figure, the target and whether the figure meets it. scripts/bench.sh
// collects these lines at the top of BENCHMARKS.md.
func summary(what, figure, target string, met bool) {
	verdict := "met"
	switch {
	case target == "":
		target, verdict = "(reported)", ""
	case !met:
		verdict = "NOT met"
	}
	fmt.Printf("SUMMARY | %s | %s | %s | %s |\n", what, figure, target, verdict)
}

// memTotal reads the machine's memory from /proc/meminfo.
func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "memory unknown"
	}
	var kb int64
	if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err != nil {
		return "memory unknown"
	}
	return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
}
