#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a fixed time each:
#
#   fuzz/run.sh [SECONDS] [TARGET...]      # default 60 s per target, every target
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# Each target starts from its committed seeds (fuzz/seeds/TARGET, read only)
# and the corpus earlier runs grew (fuzz/corpus/TARGET, not committed), with
# its dictionary (fuzz/dicts/TARGET.dict). Builds carry debug assertions and
# overflow checks (`-a`), so an arithmetic overflow is a crash. A crash
# leaves its input in fuzz/artifacts/TARGET/ and the script goes on with
# the next target; it exits 1 if any target crashed. Each target's log is
# fuzz/artifacts/TARGET.log; a summary line per target says how many inputs
# it ran and how fast.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: fuzz/run.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/prescale/target-fuzz-nightly}"
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build -a

failed=()
mkdir -p artifacts
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "seeds/$target"
  args=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
  [ -f "dicts/$target.dict" ] && args+=(-dict="dicts/$target.dict")
  log="artifacts/$target.log"
  echo "=== $target: ${seconds}s" >&2
  if cargo +nightly fuzz run -a "$target" "corpus/$target" "seeds/$target" -- "${args[@]}" >"$log" 2>&1; then
    status=ok
  else
    status=CRASHED
    failed+=("$target")
  fi
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)"
  printf '%-22s %-8s %12s execs %8s execs/s  %s\n' "$target" "$status" "${execs:-?}" "${rate:-?}" "$cov"
  if [ "$status" = CRASHED ]; then
    grep -m1 -A3 -E 'panicked at|ERROR: libFuzzer' "$log" >&2 || true
    ls "artifacts/$target" >&2 2>/dev/null || true
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/TARGET/; see README, Fuzzing)" >&2
  exit 1
fi
