#!/usr/bin/env bash
# Starts the whole pipeline on this machine with demo traffic: ClickHouse
# (Debian's package, installed if missing, data under .demo/), ingest with an
# embedded NATS server, the alerter, the observatory UI (with the tiers' query
# and export limits), the hourly retention job and the traffic generator.
# Prints the URL and one sign-in link per demo tenant; Ctrl-C stops
# everything.
#
# Environment:
#   GUARD_CLICKHOUSE_ADDR  reuse a running ClickHouse (host:port, native)
#   DEMO_PORT              observatory port (default 8080)
#   DEMO_RATE              events per second (default 40)
#   DEMO_WEBHOOK_ALLOW     CIDR that alert webhooks may reach despite the address
#                          guard, e.g. 127.0.0.2/32 for a receiver bound there
#                          (default none). Never allow 127.0.0.1: ClickHouse,
#                          NATS and the UI listen there.
set -euo pipefail
cd "$(dirname "$0")/.."

demo=.demo
port=${DEMO_PORT:-8080}
rate=${DEMO_RATE:-40}
allow=()
[ -n "${DEMO_WEBHOOK_ALLOW:-}" ] && allow=(--webhook-allow-cidr "$DEMO_WEBHOOK_ALLOW")
mkdir -p "$demo/logs"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -z "${GUARD_CLICKHOUSE_ADDR:-}" ]; then
    scripts/clickhouse.sh stop "$demo/clickhouse" >/dev/null 2>&1 || true
  fi
  exit 0
}
trap cleanup INT TERM EXIT

wait_http() { # url seconds
  for _ in $(seq 1 $(($2 * 10))); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "demo: $1 did not answer within $2 s; see $demo/logs/" >&2
  return 1
}

command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

if [ -n "${GUARD_CLICKHOUSE_ADDR:-}" ]; then
  ch=$GUARD_CLICKHOUSE_ADDR
  echo "using ClickHouse at $ch"
else
  scripts/clickhouse.sh install
  scripts/clickhouse.sh start "$demo/clickhouse" 19000 18123
  ch=127.0.0.1:19000
fi

echo "building..."
go build -o bin/ ./cmd/...

bin/ingest --clickhouse-addr "$ch" --embed-nats-listen 127.0.0.1:4222 \
  --embed-nats-store "$demo/nats" --http-addr 127.0.0.1:9464 \
  --tiers deploy/tiers.yaml --policies policies \
  >"$demo/logs/ingest.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:9464/healthz 60 || { tail -20 "$demo/logs/ingest.log"; exit 1; }

bin/alerter --nats-url nats://127.0.0.1:4222 --http-addr 127.0.0.1:9465 \
  "${allow[@]}" --public-url "http://127.0.0.1:$port" \
  >"$demo/logs/alerter.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:9465/healthz 60 || { tail -20 "$demo/logs/alerter.log"; exit 1; }

bin/observatory serve --listen "127.0.0.1:$port" --clickhouse-addr "$ch" \
  --policies policies --tiers deploy/tiers.yaml --dev-key-dir "$demo/keys" --insecure-cookies \
  --nats-url nats://127.0.0.1:4222 "${allow[@]}" \
  >"$demo/logs/observatory.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$port/signin" 60 || { tail -20 "$demo/logs/observatory.log"; exit 1; }

# Each project's tier retention, applied every hour (the first run at start).
bin/tenants --tiers deploy/tiers.yaml --policies policies retention --every 1h \
  --clickhouse-addr "$ch" --http-addr 127.0.0.1:9466 \
  >"$demo/logs/retention.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:9466/metrics 60 || { tail -20 "$demo/logs/retention.log"; exit 1; }

bin/generator --nats-url nats://127.0.0.1:4222 --rate "$rate" --invalid 0.01 \
  >"$demo/logs/generator.log" 2>&1 &
pids+=($!)

link() { # label account project roles...
  local label=$1 account=$2 project=$3; shift 3
  local args=()
  for r in "$@"; do args+=(--role "$r"); done
  local token
  token=$(bin/observatory token --key-dir "$demo/keys" --account "$account" \
    --project "$project" "${args[@]}" --subject "demo-$label" --ttl 12h \
    --label team=trust-safety 2>/dev/null)
  printf '  %-28s http://127.0.0.1:%s/signin?token=%s\n' "$label" "$port" "$token"
}

cat <<EOF

guardwatch observatory is running.

  UI:       http://127.0.0.1:$port/
  metrics:  http://127.0.0.1:9464/metrics  (ingest health: /healthz)
  alerts:   http://127.0.0.1:9465/metrics  (alerter; webhooks to private addresses are refused)
  retention: http://127.0.0.1:9466/metrics (tenants retention, hourly, by each project's tier)
  NATS:     nats://127.0.0.1:4222           (stream GUARD, subjects guard.v1.<account>.<project>.>)
  logs:     $demo/logs/

Sign in by opening one of these links (tokens last 12 hours):
EOF
link "acme admin (2 projects)" acme proj_prod,proj_staging admin
link "acme viewer" acme proj_prod viewer
link "globex analyst" globex proj_prod,support-bot analyst
link "initech auditor" initech proj_prod auditor
cat <<EOF

Or paste a token at http://127.0.0.1:$port/signin; mint more with
  bin/observatory token --key-dir $demo/keys --account acme --project proj_prod --role admin

Demo traffic: $rate events/s over 5 projects of 3 accounts, 1% deliberately invalid
(dead letters on guard.v1.<account>.<project>.deadletter). Ctrl-C stops everything.
EOF

wait -n "${pids[@]}" || true
echo "a process exited; see $demo/logs/" >&2
