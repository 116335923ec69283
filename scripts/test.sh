#!/usr/bin/env bash
# The whole test suite. Installs and starts what the tests need (Rust if missing, local NATS
# JetStream and ClickHouse unless NATS_URL / CLICKHOUSE_URL name running servers), builds the
# binaries the end-to-end tests run, then runs every test. Exit code = verdict.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_rust

if [ -z "${NATS_URL:-}" ] || [ -z "${CLICKHOUSE_URL:-}" ]; then
  ./scripts/services.sh start
  export NATS_URL="${NATS_URL:-nats://127.0.0.1:${NATS_PORT:-4222}}"
  export CLICKHOUSE_URL="${CLICKHOUSE_URL:-http://127.0.0.1:${CLICKHOUSE_HTTP_PORT:-8123}}"
fi
say "tests use NATS_URL=$NATS_URL CLICKHOUSE_URL=$CLICKHOUSE_URL"

# The end-to-end tests run the real binaries as processes.
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
