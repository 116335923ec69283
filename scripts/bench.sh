#!/usr/bin/env bash
# The benchmark: release builds, real NATS and ClickHouse (started if none answers), realistic
# sandbox rows. Prints figures as it goes; the last line is one JSON object.
#   ./scripts/bench.sh [--rows 200000] [--latency-rate 2000] [--latency-seconds 30] [--fetcher-shops 2000] [--keep]
#   ./scripts/bench.sh --history-lines N [--history-only]   # a year of history (docs/benchmark.md)
#   ./scripts/bench.sh --center-alerts N                    # the alert center with N open alerts
#   ./scripts/bench.sh --nats-sync default [...]            # on a second nats-server with JetStream's
#                                                           # default sync (for comparison; port 4252)
# NATS runs as shipped (sync_interval: always) unless --nats-sync default; the bench prints which.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_rust
args=()
sync=always
while [ $# -gt 0 ]; do
  case "$1" in
    --nats-sync) sync="${2:?--nats-sync always|default}"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "${NATS_URL:-}" ] || [ -z "${CLICKHOUSE_URL:-}" ]; then
  ./scripts/services.sh start >&2
fi
case "$sync" in
  always) ;;
  default)
    NATS_SYNC=default NATS_PORT=4252 NATS_MONITOR_PORT=8252 SERVICES_DIR="$ROOT/.local/services-sync-default" \
      ./scripts/services.sh start >&2
    export NATS_URL=nats://127.0.0.1:4252 NATS_MONITOR_URL=http://127.0.0.1:8252 ;;
  *) echo "bench: --nats-sync always|default, not $sync" >&2; exit 2 ;;
esac
cargo build --release --locked --bins --workspace --exclude e2e >&2
exec "$ROOT/target/release/pipeline-bench" "${args[@]}"
