#!/usr/bin/env bash
# The benchmark: release builds, real NATS and ClickHouse (started if none answers), realistic
# sandbox rows. Prints figures as it goes; the last line is one JSON object.
#   ./scripts/bench.sh [--rows 200000] [--latency-rate 2000] [--latency-seconds 30] [--fetcher-shops 2000] [--keep]
#   ./scripts/bench.sh --history-lines N [--history-only]   # a year of history (docs/benchmark.md)
#   ./scripts/bench.sh --center-alerts N                    # the alert center with N open alerts
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_rust
if [ -z "${NATS_URL:-}" ] || [ -z "${CLICKHOUSE_URL:-}" ]; then
  ./scripts/services.sh start >&2
fi
cargo build --release --locked --bins --workspace --exclude e2e >&2
exec "$ROOT/target/release/pipeline-bench" "$@"
