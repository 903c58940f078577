#!/usr/bin/env bash
# Benchmark the Rust gateway and worker against Python pyoco-server 0.5.1, side by side, in one
# run on this machine:
#
#   bash scripts/bench.sh [pyoco-bench options]
#
# Builds pyoco-cli (the Rust pyoco-server / pyoco-worker) and pyoco-bench in release mode, then
# runs target/release/pyoco-bench with the options given. Common options:
#   --quick            smoke run with small request counts (well under a minute)
#   --only python|rust measure one system only
#   --rounds N         each system N times, interleaved; medians are reported
#   --runs K           runs stored for the GET /runs?limit=100 measurement (default 2000)
#   --history-records N  wheel-history records for GET /wheels/history (default 10000, 0: skip)
#   --dashboard        also time both web dashboards in headless Chromium (10,000 runs stored;
#                      needs bash scripts/setup.sh --with-browser); --dashboard-only: just that
#   --out FILE         also write the results as JSON
#   --help             every option
# Needs the Python venv with pyoco-server 0.5.1 (bash scripts/setup.sh --with-interop) and the
# pinned nats-server (bash scripts/setup.sh). If the Rust binaries do not build, only the Python
# side is measured (never an old build of the Rust side). Honours CARGO_TARGET_DIR. See
# docs/benchmarks.md.
set -euo pipefail

LOG_TAG="bench"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for arg in "$@"; do
  case $arg in
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
      echo
      echo "pyoco-bench options (after building it):"
      ;;
  esac
done

pyoco_find_cargo || die "cargo not found" "install a Rust toolchain (>= 1.89), or run bash scripts/setup.sh"
cd "$PYOCO_ROOT"
release="$(pyoco_target_dir)/release"

# A Rust binary left over from an earlier build would be measured as if it were this checkout's:
# when pyoco-cli does not build, the Rust side is not measured at all.
rust_args=()
if ! cargo build --release -p pyoco-cli -p pyoco-bench; then
  warn "building pyoco-cli failed (output above): measuring the Python side only;" \
    "fix the build to compare both"
  for arg in "$@"; do
    [[ $arg != --only* ]] || die "pyoco-cli does not build, so --only cannot be honoured" \
      "fix the build (output above), or drop --only to measure the Python side alone"
  done
  cargo build --release -p pyoco-bench || die "building pyoco-bench failed (output above)"
  rust_args=(--only python)
else
  rust_args=(--rust-bin-dir "$release")
fi

exec "$release/pyoco-bench" "${rust_args[@]}" "$@"
