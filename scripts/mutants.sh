#!/usr/bin/env bash
# Mutation testing of the pure core (not part of CI: it takes hours on two cores). cargo-mutants
# changes one line at a time (a condition flipped, a value replaced, a function's body made
# `Default::default()`) and runs the crate's unit tests: a mutant no test fails on is a line
# no test would miss. Results: mutants.out/ (caught.txt, missed.txt, timeout.txt, unviable.txt);
# the score and every survivor's explanation: docs/testing.md, "Mutation testing".
#   ./scripts/mutants.sh            every file below
#   ./scripts/mutants.sh -f FILE    one file (any cargo-mutants arguments)
#   ./scripts/mutants.sh --iterate  every file, only what the last run did not catch
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_rust
command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants --version "~27.1"
FILES=(
  sink/src/alerts.rs 'sink/src/engine/*.rs' sink/src/rows.rs sink/src/open.rs sink/src/known.rs
  fetcher/src/plan.rs fetcher/src/writeback/decide.rs fetcher/src/credentials.rs fetcher/src/state.rs
  'normalizer/src/normalize/*.rs' schemas/src/status.rs schemas/src/calendar.rs
)
args=()
if [[ " $* " != *" -f "* && " $* " != *" --file "* ]]; then
  for f in "${FILES[@]}"; do args+=(-f "$f"); done
fi
exec nice -n 19 cargo mutants --gitignore true --jobs "${MUTANTS_JOBS:-1}" --output "${MUTANTS_OUT:-$ROOT}" "${args[@]}" "$@"
