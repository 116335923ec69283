#!/usr/bin/env bash
# The main job. On a fresh Debian machine: installs what is missing, starts local NATS JetStream
# and ClickHouse if none is reachable, starts the Qoo10 sandbox when pipeline.toml configures no
# real shop, runs fetcher, normalizer and sink, and prints a summary (orders per status, open
# alerts). Ctrl-C stops what it started.
#   ./scripts/run.sh           run until Ctrl-C, summary after the first poll and every 5 minutes
#   ./scripts/run.sh --once    one poll of every shop, drain the pipeline, print the summary, exit
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ONCE=0
[ "${1:-}" = "--once" ] && ONCE=1

ensure_rust
./scripts/services.sh start
# RUN_BIN_DIR: use binaries built already (tests/tests/operations.rs times Ctrl-C with the
# tests' debug build; a build here would wait on the running `cargo test`'s lock).
if [ -n "${RUN_BIN_DIR:-}" ]; then
  BIN="$RUN_BIN_DIR"
else
  # `quick` (Cargo.toml): optimized enough for a first look, built in about 3 minutes on 2 cores.
  profile="${RUN_PROFILE:-quick}"
  say "building ($profile)…"
  cargo build --profile "$profile" --bins --locked
  BIN="$ROOT/target/$profile"
fi
LOGS="${RUN_LOG_DIR:-$LOCAL/logs}"
mkdir -p "$LOGS"

PIDS=()
# The services run in sessions of their own (setsid), so that a Ctrl-C at the terminal, which
# signals the whole foreground process group, reaches this script only: each service then gets
# exactly one SIGTERM from here, finishes its batch, releases its leases (a run started right
# after is active at once) and exits. Whatever still runs after 9 s is killed.
start_service() { # name, then the command
  local name="$1"; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=($!)
}
cleanup() {
  trap - INT TERM
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 90); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}" $(jobs -p); do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CONFIG="${PIPELINE_CONFIG:-$ROOT/pipeline.toml}"
if [ -f "$CONFIG" ] && grep -q '^[[:space:]]*\[\[shops\]\]' "$CONFIG"; then
  say "using $CONFIG"
else
  SANDBOX_ADDR="${SANDBOX_ADDR:-127.0.0.1:18080}"
  say "no [[shops]] in $CONFIG: running against the Qoo10 sandbox on $SANDBOX_ADDR"
  CONFIG="$LOCAL/pipeline.sandbox.toml"
  "$BIN/qoo10-sandbox" --listen "$SANDBOX_ADDR" --print-config >"$CONFIG"
  start_service sandbox "$BIN/qoo10-sandbox" --listen "$SANDBOX_ADDR"
  for _ in $(seq 1 100); do curl -sf "http://$SANDBOX_ADDR/_sandbox/health" >/dev/null && break; sleep 0.1; done
fi
export PIPELINE_CONFIG="$CONFIG"

CH_URL="${CLICKHOUSE_URL:-http://127.0.0.1:8123}"
DB="${CLICKHOUSE_DATABASE:-$(sed -n '/^\[clickhouse\]/,/^\[/s/^database *= *"\(.*\)"/\1/p' "$CONFIG" | head -1)}"
DB="${DB:-qoo10}"
ch() { curl -sf "$CH_URL/" --data-binary "$1" || true; }

summary() {
  echo
  echo "== orders stored per status ($DB.orders FINAL) =="
  ch "SELECT shop_id, status, count() AS orders FROM $DB.orders FINAL GROUP BY shop_id, status ORDER BY shop_id, status FORMAT PrettyCompactNoEscapes"
  if [ "$(ch "EXISTS TABLE $DB.alerts")" = "1" ]; then
    echo "== open alerts =="
    ch "SELECT kind, shop_id, count() AS open FROM $DB.alerts FINAL WHERE state = 'open' GROUP BY kind, shop_id ORDER BY kind FORMAT PrettyCompactNoEscapes"
  else
    echo "== open alerts: none (the alert engine has not created its table yet) =="
  fi
  [ "$ONCE" = 1 ] || echo "status page: http://127.0.0.1:${SINK_HTTP_PORT:-9466}/   (metrics: /metrics on ports 9464-9466)"
  echo "dead letters: $(curl -sf "http://127.0.0.1:${NATS_MONITOR_PORT:-8222}/jsz?streams=true" | python3 -c 'import json,sys
d=json.load(sys.stdin); print(sum(s["state"]["messages"] for a in d.get("account_details",[]) for s in a.get("stream_detail",[]) if s["name"] == "DLQ"))' 2>/dev/null || echo "?")"
  echo
}

if [ "$ONCE" = 1 ]; then
  "$BIN/fetcher" --once
  "$BIN/normalizer" --until-idle
  "$BIN/sink" --until-idle
  summary
  exit 0
fi

start_service sink "$BIN/sink"
start_service normalizer "$BIN/normalizer"
start_service fetcher "$BIN/fetcher"
say "fetcher, normalizer and sink running; logs in $LOGS/. Ctrl-C stops everything this script started."

for _ in $(seq 1 120); do
  n="$(ch "SELECT count() FROM $DB.orders")"
  [ -n "$n" ] && [ "$n" != "0" ] && break
  sleep 1
done
sleep 2
while true; do
  summary
  for p in "${PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || { say "a service exited; see $LOGS/"; exit 1; }
  done
  sleep 300 & wait $!
done
