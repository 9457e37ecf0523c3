#!/usr/bin/env bash
# Installs and runs a throwaway ClickHouse server (Debian's 18.16 package) on
# loopback, for tests and the dev run.
#
#   clickhouse.sh install                        install the server with apt-get if missing
#   clickhouse.sh start DIR [TCP_PORT] [HTTP_PORT]
#                                                start a server keeping everything in DIR
#                                                and wait until it answers; exits 0 at once
#                                                if a server already answers on TCP_PORT.
#                                                TCP_PORT defaults to 19000, HTTP_PORT to
#                                                TCP_PORT - 877 (so 18123 for 19000)
#   clickhouse.sh stop DIR                       stop the server started in DIR
#
# If CLICKHOUSE_WATCH_PID is set at start, the server is also stopped when
# that process exits, so a crashed test binary does not leave it running.
set -euo pipefail

readonly START_TIMEOUT=${CLICKHOUSE_START_TIMEOUT:-60}
readonly STOP_TIMEOUT=${CLICKHOUSE_STOP_TIMEOUT:-30}

die() {
  echo "clickhouse.sh: $*" >&2
  exit 1
}

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
}

# server_cmd prints the command that runs the server: Debian's split binary,
# or upstream's single "clickhouse" binary with its "server" tool.
server_cmd() {
  if command -v clickhouse-server >/dev/null 2>&1; then
    command -v clickhouse-server
  elif [ -x /usr/sbin/clickhouse-server ]; then
    echo /usr/sbin/clickhouse-server
  elif command -v clickhouse >/dev/null 2>&1; then
    echo "$(command -v clickhouse) server"
  elif [ -x /usr/bin/clickhouse ]; then
    echo "/usr/bin/clickhouse server"
  else
    return 1
  fi
}

# client_cmd prints the command that runs the native client, if there is one.
client_cmd() {
  if command -v clickhouse-client >/dev/null 2>&1; then
    command -v clickhouse-client
  elif command -v clickhouse >/dev/null 2>&1; then
    echo "$(command -v clickhouse) client"
  else
    return 1
  fi
}

cmd_install() {
  if server_cmd >/dev/null; then
    return 0
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "install: not root and no sudo"
    sudo=(sudo)
  fi
  echo "clickhouse.sh: installing clickhouse-server with apt-get" >&2
  "${sudo[@]}" apt-get update
  # The client is a separate package; start uses it to check readiness.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y clickhouse-server clickhouse-client
  server_cmd >/dev/null || die "install: clickhouse-server still missing after apt-get"
}

# alive PID succeeds while PID runs. A zombie counts as gone: the server is
# reparented when this script exits, and not every init reaps promptly.
alive() {
  local pid=$1 stat state
  [ -n "$pid" ] || return 1
  if [ -d /proc ] && [ -e /proc/self/stat ]; then
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    state=${state%% *}
    [ "$state" != Z ]
  else
    kill -0 "$pid" 2>/dev/null
  fi
}

# is_server PID DIR succeeds if PID is alive and is the server started with
# DIR's config, not an unrelated process that reused a stale pid.
is_server() {
  local pid=$1 dir=$2 cmdline
  alive "$pid" || return 1
  [ -r "/proc/$pid/cmdline" ] || return 0
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"--config-file=$dir/config.xml"* ]]
}

# ping TCP_PORT HTTP_PORT succeeds if a server answers SELECT 1: over the
# native port when the client is installed, else over HTTP.
ping() {
  local tcp=$1 http=$2 client to=()
  command -v timeout >/dev/null 2>&1 && to=(timeout 5)
  if client=$(client_cmd); then
    # shellcheck disable=SC2086 # client may be "clickhouse client"
    "${to[@]}" $client --host 127.0.0.1 --port "$tcp" --query 'SELECT 1' \
      </dev/null >/dev/null 2>&1
  elif command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 5 "http://127.0.0.1:$http/?query=SELECT%201" >/dev/null 2>&1
  elif command -v wget >/dev/null 2>&1; then
    wget -q -T 5 -O /dev/null "http://127.0.0.1:$http/?query=SELECT%201" 2>/dev/null
  else
    die "neither clickhouse-client nor curl nor wget is installed"
  fi
}

xml_escape() {
  local s=$1
  s=${s//&/&amp;}
  s=${s//</&lt;}
  s=${s//>/&gt;}
  printf '%s' "$s"
}

write_config() {
  local dir=$1 tcp=$2 http=$3 d
  d=$(xml_escape "$dir")
  cat >"$dir/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/clickhouse.sh: a loopback-only throwaway server. -->
<yandex>
    <logger>
        <level>warning</level>
        <log>$d/log/clickhouse-server.log</log>
        <errorlog>$d/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>

    <listen_host>127.0.0.1</listen_host>
    <tcp_port>$tcp</tcp_port>
    <http_port>$http</http_port>
    <!-- No interserver_http_port: no replication, so no third port. -->

    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>67108864</mark_cache_size>

    <!-- Paths must end with a slash. -->
    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>

    <users_config>$d/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>

    <!-- Tests drop what they create, whatever its size. -->
    <max_table_size_to_drop>0</max_table_size_to_drop>
    <max_partition_size_to_drop>0</max_partition_size_to_drop>
</yandex>
EOF
  cat >"$dir/users.xml" <<'EOF'
<?xml version="1.0"?>
<!-- Written by scripts/clickhouse.sh: one passwordless user, loopback only. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

show_logs() {
  local dir=$1 f
  for f in "$dir/out.log" "$dir/log/clickhouse-server.err.log"; do
    if [ -s "$f" ]; then
      echo "--- tail of $f" >&2
      tail -n 20 "$f" >&2
    fi
  done
}

# start_watchdog PID stops the server PID once CLICKHOUSE_WATCH_PID is gone.
start_watchdog() {
  local pid=$1 watch=${CLICKHOUSE_WATCH_PID:-}
  [ -n "$watch" ] || return 0
  alive "$watch" || die "start: CLICKHOUSE_WATCH_PID $watch is not running"
  (
    trap '' HUP
    while alive "$watch" && alive "$pid"; do sleep 1; done
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 "$STOP_TIMEOUT"); do alive "$pid" || exit 0; sleep 1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  ) </dev/null >/dev/null 2>&1 &
}

cmd_start() {
  [ $# -ge 1 ] && [ $# -le 3 ] || usage
  local dir=$1 tcp=${2:-19000} http=${3:-} server pid=""
  [[ $tcp =~ ^[0-9]+$ ]] || die "start: TCP port must be a number"
  if [ -z "$http" ]; then
    # Keep the pair apart from other servers' defaults: 19000/18123, 19500/18623.
    http=$((tcp - 877))
    [ "$http" -ge 1024 ] || http=$((tcp + 1))
  fi
  [[ $http =~ ^[0-9]+$ ]] || die "start: HTTP port must be a number"
  [ "$tcp" != "$http" ] || die "start: TCP and HTTP ports must differ"

  if ping "$tcp" "$http"; then
    echo "clickhouse.sh: a server already answers on 127.0.0.1:$tcp" >&2
    return 0
  fi
  server=$(server_cmd) || die "start: clickhouse-server not installed (run: $0 install)"

  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    is_server "$pid" "$dir" || pid=""
  fi
  if [ -n "$pid" ]; then
    # Still starting up, or serving other ports: wait only in the first case.
    local running
    running=$(sed -n 's:.*<tcp_port>\([0-9]*\)</tcp_port>.*:\1:p' "$dir/config.xml")
    [ "$running" = "$tcp" ] ||
      die "start: server $pid from $dir runs on port ${running:-?}; stop it first"
  fi

  if [ -z "$pid" ]; then
    mkdir -p "$dir/log" "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
    write_config "$dir" "$tcp" "$http"
    # Output goes to a file and stdin is closed so that a caller capturing
    # this script's output is not held open by the server.
    # shellcheck disable=SC2086 # server may be "clickhouse server"
    nohup $server --config-file="$dir/config.xml" </dev/null >"$dir/out.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/pid"
    start_watchdog "$pid"
  fi

  local deadline=$((SECONDS + START_TIMEOUT))
  until ping "$tcp" "$http"; do
    if ! alive "$pid"; then
      rm -f "$dir/pid"
      show_logs "$dir"
      die "start: server exited before answering on 127.0.0.1:$tcp"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_logs "$dir"
      die "start: no answer on 127.0.0.1:$tcp after ${START_TIMEOUT}s (pid $pid still running)"
    fi
    sleep 0.1
  done
  echo "clickhouse.sh: server $pid answers on 127.0.0.1:$tcp (http $http), data in $dir" >&2
}

cmd_stop() {
  [ $# -eq 1 ] || usage
  local dir=$1 pid
  [ -f "$dir/pid" ] || return 0
  dir=$(cd "$dir" && pwd)
  pid=$(cat "$dir/pid")
  if is_server "$pid" "$dir"; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while alive "$pid"; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "clickhouse.sh: server $pid ignored SIGTERM for ${STOP_TIMEOUT}s, killing" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
      sleep 0.1
    done
  fi
  rm -f "$dir/pid"
}

case ${1:-} in
  install) shift; [ $# -eq 0 ] || usage; cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  *) usage ;;
esac
