#!/usr/bin/env bash
# Runs every pipeline benchmark against a throwaway ClickHouse and writes
# BENCHMARKS.md: the machine (cores, memory, load), the date, the commands
# and their full output.
#
#   scripts/bench.sh                 all of ingest, queries, export, alerts
#
# Environment:
#   BENCH_PORT         first TCP port tried for ClickHouse (default 19700)
#   BENCH_EXPORT_ROWS  rows of the export benchmark (default 5000000; loading
#                      them takes a few minutes)
#   BENCH_OUT          output file (default BENCHMARKS.md in the repository)
#   BENCH_ONLY         space-separated subset, e.g. "queries export"
#   BENCH_COMPRESSION  wire compression of ingest and export blocks (default
#                      none: the ClickHouse here is on the same host)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

port=${BENCH_PORT:-19700}
export_rows=${BENCH_EXPORT_ROWS:-5000000}
out=${BENCH_OUT:-$root/BENCHMARKS.md}
only=${BENCH_ONLY:-ingest queries export alerts}
comp=${BENCH_COMPRESSION:-none}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A free TCP port whose HTTP partner (port - 877, see clickhouse.sh) is free too.
while ! { port_free "$port" && port_free $((port - 877)); }; do
  port=$((port + 1))
  [ "$port" -lt $((${BENCH_PORT:-19700} + 100)) ] || { echo "bench.sh: no free port" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")
stop() {
  scripts/clickhouse.sh stop "$tmp/clickhouse" || true
  rm -rf "$tmp"
}
trap stop EXIT

scripts/clickhouse.sh install
CLICKHOUSE_WATCH_PID=$$ scripts/clickhouse.sh start "$tmp/clickhouse" "$port"
go build -o "$tmp/bench" ./cmd/bench
go build -o "$tmp/ingest" ./cmd/ingest
chpid=$(cat "$tmp/clickhouse/pid")

report=$tmp/report.md
{
  echo "# Benchmarks"
  echo
  echo "Written by \`scripts/bench.sh\` (\`make bench\`); do not edit by hand."
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- cores (nproc): $(nproc)"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)"
  echo "- ClickHouse: $(clickhouse-client --port "$port" --query 'SELECT version()' 2>/dev/null || echo unknown), on this machine, started by the script"
  echo "- Go: $(go env GOVERSION)"
  echo
  echo '```'
  echo '$ free -g'
  free -g
  echo '```'
} >"$report"

run() {
  local name=$1
  shift
  case " $only " in *" $name "*) ;; *) return 0 ;; esac
  echo "bench.sh: running bench $name $*" >&2
  {
    echo
    echo "## $name"
    echo
    echo "\`bench --clickhouse-addr 127.0.0.1:PORT $name $*\`"
    echo
  } >>"$report"
  local start=$SECONDS rc=0
  "$tmp/bench" --clickhouse-addr "127.0.0.1:$port" "$name" "$@" 2>&1 | tee -a "$report" || rc=$?
  {
    echo
    echo "_took $((SECONDS - start)) s, exit $rc; load average after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)_"
  } >>"$report"
  [ "$rc" -eq 0 ] || failed+=("$name")
}

failed=()

run ingest --ingest-bin "$tmp/ingest" --clickhouse-pid "$chpid" --clickhouse-compression "$comp"
# The viewed project's pages with the neighbour detached (0 rows) and at 9M,
# in interleaved rounds so that load drift hits both steps alike.
run queries --neighbour-steps 0,9000000 --requests 60 --rounds 6
run export --rows "$export_rows" --server-pid "$chpid" --clickhouse-compression "$comp"
run alerts

# One table of every figure against its target, above the full output.
final=$tmp/final.md
{
  awk '/^## /{exit} {print}' "$report"
  echo "## Summary"
  echo
  echo "| measurement | figure | target | verdict |"
  echo "|---|---|---|---|"
  grep '^SUMMARY | ' "$report" | sed 's/^SUMMARY //' || echo "| (no figures) | | | |"
  echo
  awk 'f{print} /^## /{if(!f){f=1; print}}' "$report"
} >"$final"
echo >&2
grep '^SUMMARY | ' "$report" | sed 's/^SUMMARY //' >&2 || true
cp "$final" "$out"
echo "bench.sh: wrote $out" >&2
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench.sh: failed: ${failed[*]}" >&2
  exit 1
fi
