#!/usr/bin/env bash
# Runs every test against real servers: ClickHouse from Debian's package
# (installed if missing), embedded NATS, Debian's Chromium for the UI.
# Integration tests fail instead of skipping here.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v clickhouse-server >/dev/null 2>&1 || need_apt+=(clickhouse-server)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/guardwatch-test.XXXXXX)
port=${OBS_TEST_CLICKHOUSE_PORT:-19400}
cleanup() { scripts/clickhouse.sh stop "$work/clickhouse" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
scripts/clickhouse.sh start "$work/clickhouse" "$port" $((port + 1))

export OBS_CLICKHOUSE_ADDR="127.0.0.1:$port"
export OBS_REQUIRE_INTEGRATION=1

echo "== go vet"
go vet ./...
echo "== generated files are current"
make -s generate-check
echo "== tests"
go test -count=1 -timeout 30m ./...
echo "== short fuzz runs"
scripts/fuzz.sh 10s
