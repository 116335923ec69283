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
# The fault suite runs private nats-server processes (killed, restarted, clustered) besides them.
./scripts/services.sh install

# The status page is tested in a real headless browser.
if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  say "installing chromium (Debian) for the status page test"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# The end-to-end tests run the real binaries as processes.
cargo build --workspace --bins --locked
mkdir -p "$LOCAL"
log="$LOCAL/test-output.log"
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# cargo's last line is the doc-test count of the last crate (often 0): close with the totals.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"
