#!/usr/bin/env bash
# Set up this machine and pass the whole test suite, in one command:
#
#   sudo bash scripts/test.sh [--quick] [setup.sh options...]
#
# 1. setup    scripts/setup.sh --with-interop --with-testtools --with-desktop-tests --with-browser
#             (Chromium for the cross-origin test), plus any setup.sh option given here
# 2. fmt      cargo fmt --all -- --check                        (skipped with --quick)
# 3. build    the whole workspace and its tests (cargo nextest run --workspace --no-run), with
#             clippy -D warnings as the compiler of the workspace's own crates: the lint and the
#             test build are one compilation (`cargo clippy` would compile every crate a second
#             time, in check mode). --quick builds with plain rustc (no lint).
# 4. runner   the Python runner's unittest suite, with the runner venv's Python
# 5. test     cargo nextest run --workspace (reuses the build) when cargo-nextest is installed,
#             else cargo test --workspace --lib --bins --tests
# 6. doctest  cargo test --workspace --doc (reuses the build)
#
# The tests find the tools through PYOCO_NATS_SERVER_BIN, PYOCO_TEST_PYTHON,
# PYOCO_TEST_INTEROP_VENV and PYOCO_TEST_TOOLS_VENV, exported here from the data dir setup.sh filled. Every phase runs even
# after an earlier one failed (setup excepted), so one run shows every problem; the exit status is
# non-zero when any phase failed, and the last line says which.
# Through sudo from a normal user who owns the checkout, everything but apt runs as that user.
set -euo pipefail

LOG_TAG="test"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

QUICK=0
SETUP_ARGS=()
for arg in "$@"; do
  case $arg in
    --quick) QUICK=1 ;;
    -h | --help)
      usage
      echo "setup.sh options:"
      bash "$PYOCO_SCRIPTS_DIR/setup.sh" --help | sed -n '/^Options:/,$p' | tail -n +2
      exit 0
      ;;
    *) SETUP_ARGS+=("$arg") ;;
  esac
done

if pyoco_should_drop_to_sudo_user; then
  bash "$PYOCO_SCRIPTS_DIR/setup.sh" --apt-only --with-interop --with-testtools --with-desktop-tests \
    --with-browser \
    "${SETUP_ARGS[@]}"
  pyoco_exec_as_sudo_user bash "${BASH_SOURCE[0]}" --skip-apt "$@"
fi

START=$SECONDS
SUMMARY=()
FAILED=()

# phase NAME CMD...: run one phase with a banner, its time, and its result.
phase() {
  local name=$1 t0=$SECONDS rc=0
  shift
  printf '\n==== %s: %s: %s\n' "$LOG_TAG" "$name" "$*"
  "$@" || rc=$?
  local took
  took=$(fmt_secs $((SECONDS - t0)))
  if ((rc == 0)); then
    printf '==== %s: %s: ok (%s)\n' "$LOG_TAG" "$name" "$took"
    SUMMARY+=("$name ok $took")
  else
    printf '==== %s: %s: FAILED with exit code %d (%s)\n' "$LOG_TAG" "$name" "$rc" "$took" >&2
    SUMMARY+=("$name FAILED $took")
    FAILED+=("$name")
  fi
  return "$rc"
}

finish() {
  local total phases
  total=$(fmt_secs $((SECONDS - START)))
  phases=$(printf '%s, ' "${SUMMARY[@]}")
  phases=${phases%, }
  echo
  if ((${#FAILED[@]} == 0)); then
    log "ALL PHASES PASSED in $total ($phases)"
    exit 0
  fi
  log "FAILED: ${FAILED[*]} (total $total: $phases)"
  exit 1
}

# 1. setup: without it nothing below means anything.
if ! phase setup bash "$PYOCO_SCRIPTS_DIR/setup.sh" --with-interop --with-testtools --with-desktop-tests \
  --with-browser \
  "${SETUP_ARGS[@]}"; then
  log "setup failed: nothing was tested (see the ERROR lines above for what to do)"
  finish
fi

pyoco_find_cargo || die "cargo not found after setup" "add ~/.cargo/bin to PATH"
DATA=$(pyoco_data_dir)
export PYOCO_NATS_SERVER_BIN="$DATA/bin/nats-server"
export PYOCO_TEST_PYTHON="$DATA/venv/bin/python"
INTEROP_VERSION=$(pyoco_interop_version)
export PYOCO_TEST_INTEROP_VENV="$DATA/venv-pyoco-server-$INTEROP_VERSION"
log "PYOCO_NATS_SERVER_BIN=$PYOCO_NATS_SERVER_BIN"
log "PYOCO_TEST_PYTHON=$PYOCO_TEST_PYTHON"
export PYOCO_TEST_TOOLS_VENV="$DATA/venv-testtools"
log "PYOCO_TEST_INTEROP_VENV=$PYOCO_TEST_INTEROP_VENV"
log "PYOCO_TEST_TOOLS_VENV=$PYOCO_TEST_TOOLS_VENV"
export PYOCO_TEST_TAURI_DRIVER="$DATA/tools/bin/tauri-driver"
log "PYOCO_TEST_TAURI_DRIVER=$PYOCO_TEST_TAURI_DRIVER"

cd "$PYOCO_ROOT"

if [[ $QUICK == 1 ]]; then
  log "--quick: skipping fmt and the lint"
else
  # rustfmt colours its diff even into a log file unless told (cargo's setting doesn't reach it).
  phase fmt cargo fmt --all -- --check --color "${CARGO_TERM_COLOR:-auto}" || true
  # clippy-driver compiles like rustc and lints on the way (what `cargo clippy` runs in check
  # mode); every cargo command below sees the same two variables, so none rebuilds.
  if clippy_driver=$(pyoco_clippy_driver); then
    export RUSTC_WORKSPACE_WRAPPER=$clippy_driver
    export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
    log "lint: clippy -D warnings runs inside the build ($clippy_driver)"
  else
    log "clippy-driver not found: the lint runs on its own (rustup component add clippy)"
    phase clippy cargo clippy --workspace --all-targets -- -D warnings || true
  fi
fi

have_nextest=0
if cargo nextest --version >/dev/null 2>&1; then
  have_nextest=1
else
  log "cargo-nextest not installed: using cargo test (cargo install cargo-nextest --locked for nicer output)"
fi
build_ok=0
if ((have_nextest)); then
  phase build cargo nextest run --workspace --no-run && build_ok=1
else
  phase build cargo test --workspace --lib --bins --tests --no-run && build_ok=1
fi

# The worker's Python runner (real pyoco), tested on its own protocol.
phase runner "$PYOCO_TEST_PYTHON" -m unittest discover -s crates/pyoco-worker/python/tests || true
if ((build_ok)); then
  if ((have_nextest)); then
    phase test cargo nextest run --workspace --no-fail-fast || true
  else
    phase test cargo test --workspace --lib --bins --tests --no-fail-fast || true
  fi
  phase doctest cargo test --workspace --doc || true
else
  log "the build failed: nothing was tested (the errors are above)"
fi

finish
