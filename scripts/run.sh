#!/usr/bin/env bash
# Set up this machine and run the appliance (gateway + local worker + managed nats-server), from
# the folder that holds your task modules and flow.yaml:
#
#   cd ~/my-flows && sudo bash /path/to/checkout/scripts/run.sh [options of `pyoco-server up`...]
#
# Runs scripts/setup.sh (options through PYOCO_SETUP_DESKTOP=1, PYOCO_SETUP_BROWSER=1,
# PYOCO_SETUP_INTEROP=1), builds the release binary with `cargo build --release -p pyoco-cli`
# in the checkout, then replaces itself with `pyoco-server up --with-nats "$@"` in the folder it
# was started from: the local worker imports task modules from that folder (and from
# PYOCO_TASKS_PATH, first), and says so when it starts.
#
# PYOCO_RUN_BIN=/path/to/pyoco-server runs that binary instead of building one (a build you made
# yourself or installed; the test suite passes the one it built).
# Through sudo from a normal user who owns the checkout, everything but apt runs as that user.
set -euo pipefail

LOG_TAG="run"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if pyoco_should_drop_to_sudo_user; then
  bash "$PYOCO_SCRIPTS_DIR/setup.sh" --apt-only
  pyoco_exec_as_sudo_user bash "${BASH_SOURCE[0]}" "$@"
fi

bash "$PYOCO_SCRIPTS_DIR/setup.sh" || die "setup failed (see the ERROR lines above)"

if [[ -n ${PYOCO_RUN_BIN:-} ]]; then
  bin=$PYOCO_RUN_BIN
  [[ -x $bin && ! -d $bin ]] || die "PYOCO_RUN_BIN=$bin is not an executable file" \
    "point it at a pyoco-server binary, or unset it to build one from this checkout"
  log "PYOCO_RUN_BIN: using $bin (not building)"
else
  pyoco_find_cargo || die "cargo not found after setup" "add ~/.cargo/bin to PATH"
  log "cargo build --release -p pyoco-cli (in $PYOCO_ROOT)"
  t0=$SECONDS
  # In a subshell: the appliance below starts in the caller's folder, not in the checkout.
  (cd "$PYOCO_ROOT" && cargo build --release -p pyoco-cli) ||
    die "cargo build --release -p pyoco-cli failed (output above)"
  log "built in $(fmt_secs $((SECONDS - t0)))"
  bin="$(pyoco_target_dir)/release/pyoco-server"
  [[ -x $bin ]] || die "$bin was not built" "check the [[bin]] targets of crates/pyoco-cli"
fi

log "exec $bin up --with-nats $* (in $PWD)"
exec "$bin" up --with-nats "$@"
