#!/usr/bin/env bash
# The whole test suite. Installs and starts what the tests need (Rust if missing, local NATS
# JetStream and ClickHouse unless NATS_URL / CLICKHOUSE_URL name running servers), builds the
# binaries the end-to-end tests run, then runs every test (and, without arguments, the GRANT
# checks on current ClickHouse: tests/grants/). Exit code = verdict.
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
ensure_nats_server

# The lifecycle test and the clock fault move the processes' clocks with faketime (Debian's package).
if ! command -v faketime >/dev/null; then
  say "installing faketime (Debian) for the lifecycle test"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
fi

# The alert center is tested in a real headless browser; its screenshots need a Japanese font.
if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null || ! fc-list :lang=ja 2>/dev/null | grep -q .; then
  say "installing chromium and a Japanese font (Debian) for the alert center test"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-ipafont-gothic >/dev/null
fi

# The end-to-end tests run the real binaries as processes.
cargo build --workspace --bins --locked
mkdir -p "$LOCAL"
log="$LOCAL/test-output.log"
: >"$log"
rc=0
if [ "$#" -gt 0 ]; then
  # Some tests, as asked: cargo test's own runner.
  set +e
  cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
else
  # The whole suite: every test executable, several at once (scripts/parallel-tests.py says why),
  # and the compatibility run with Debian's nats-server 2.9.10: the end-to-end suites of the
  # pipeline, standbys and write-back against a 2.9.10 JetStream on port 4232. COMPAT_FAULTS=1
  # adds the fault and failure suites (docs/testing.md: what they showed there).
  if ! [ -x /usr/sbin/nats-server ]; then
    say "installing Debian's nats-server for the 2.9.10 compatibility run"
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
  fi
  compat="$LOCAL/services/nats-compat"
  rm -rf "$compat"; mkdir -p "$compat"
  /usr/sbin/nats-server -a 127.0.0.1 -p 4232 -js -sd "$compat/js" >"$compat/nats.log" 2>&1 &
  compat_pid=$!
  trap 'kill "$compat_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/4232) 2>/dev/null && break; sleep 0.1; done
  say "compatibility run: $(/usr/sbin/nats-server --version)"
  say "building the test executables"
  cargo test --workspace --locked --no-run --message-format=json-render-diagnostics >"$LOCAL/test-build.json"
  compat_suites="pipeline standby writeback batch${COMPAT_FAULTS:+ faults failures}"
  python3 - "$LOCAL/test-build.json" "$compat_suites" >"$LOCAL/test-jobs.tsv" <<'PY'
import json, os, sys
compat = sys.argv[2].split()
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    name, cwd, exe = m["target"]["name"], os.path.dirname(m["manifest_path"]), m["executable"]
    kind = m["target"]["kind"][0]
    label = name if kind == "test" else f"{name}-unit"
    print(f"{label}\t{cwd}\t-\t{exe}")
    if kind == "test" and name in compat:
        print(f"compat-{name}\t{cwd}\tNATS_URL=nats://127.0.0.1:4232 NATS_SERVER=/usr/sbin/nats-server\t{exe}")
PY
  say "running $(wc -l <"$LOCAL/test-jobs.tsv") test executables, ${TEST_JOBS:-3} at once (logs: $LOCAL/test-logs/)"
  set +e
  python3 scripts/parallel-tests.py "${TEST_JOBS:-3}" "$LOCAL/test-logs" <"$LOCAL/test-jobs.tsv" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  kill "$compat_pid" 2>/dev/null || true
fi

# docs/security.md's GRANTs, run and enforced on current ClickHouse: the local server is 18.16,
# which has no SQL access control, so chdb (current ClickHouse as a Python module, from PyPI)
# runs them, against the statements the sink itself runs (`sink schema`).
if [ "$#" -eq 0 ]; then
  ensure_venv
  venv="$VENV"
  "$venv/bin/python" -c 'import chdb' 2>/dev/null || "$venv/bin/python" -m pip install -q --disable-pip-version-check "chdb==4.4.0"
  target/debug/sink schema > "$LOCAL/schema.sql"
  set +e
  "$venv/bin/python" tests/grants/check_grants.py "$LOCAL/schema.sql" docs/security.md 2>&1 | tee -a "$log"
  grants_rc=${PIPESTATUS[0]}
  set -e
  [ "$grants_rc" -eq 0 ] || rc=$grants_rc
fi
# Hygiene (whole runs only): formatting, lints as errors, known advisories of the dependencies.
if [ "$#" -eq 0 ]; then
  ensure_component rustfmt
  ensure_component clippy
  say "cargo fmt --check, cargo clippy -D warnings"
  cargo fmt --all -- --check || { say "FAILED: cargo fmt --check (run cargo fmt --all)"; rc=1; }
  cargo clippy --workspace --all-targets --locked -q -- -D warnings || { say "FAILED: cargo clippy"; rc=1; }
  # RustSec's database is a git repository on GitHub; where GitHub cannot be reached the check
  # cannot run, and says so instead of passing quietly.
  if timeout 20 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
    command -v cargo-deny >/dev/null || cargo install --locked cargo-deny --version "~0.18" -q
    cargo deny check advisories || { say "FAILED: cargo deny check advisories"; rc=1; }
  else
    say "advisory check NOT RUN: github.com/rustsec/advisory-db cannot be reached from this machine"
  fi
fi
# cargo's last line is the doc-test count of the last crate (often 0): close with the totals.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"
