#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang and runs each for SECONDS (default 60) on the committed
# corpus, adding what it finds to a scratch copy (commit new inputs by hand if they are worth keeping).
#   tests/fuzz/run.sh            # 60 s each, as .ci/run does
#   tests/fuzz/run.sh 3600       # a longer run
set -euo pipefail
seconds=${1:-60}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${XENT_FUZZ_BUILD:-$root/build-fuzz}
cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DXENT_BUILD_FUZZERS=ON \
  -DXENT_BUILD_TESTS=OFF -DXENT_BUILD_EXAMPLES=OFF -DXENT_BUILD_BENCH=OFF -DXENT_BUILD_TOOLS=OFF -DXENT_INSTALL=OFF >/dev/null
cmake --build "$build" -j2
for fuzzer in "$build"/tests/fuzz/fuzz_*; do
  name=$(basename "$fuzzer")
  corpus="$root/tests/fuzz/corpus/${name#fuzz_}"
  scratch=$(mktemp -d)
  cp -r "$corpus/." "$scratch/"
  echo "== $name: $seconds s on $(ls "$corpus" | wc -l) corpus inputs"
  # Crash inputs land in the build tree (ignored by git), never in the working directory.
  mkdir -p "$build/artifacts"
  "$fuzzer" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$build/artifacts/$name-" "$scratch" 2>&1 | grep -E "stat::number_of_executed_units|stat::new_units_added|ERROR|SUMMARY|fuzz_[a-z_]+:|Done" || true
  "$fuzzer" -runs=0 "$scratch" >/dev/null 2>&1 || { echo "$name: an input in $scratch fails"; exit 1; }
  rm -rf "$scratch"
done
