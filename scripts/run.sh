#!/usr/bin/env bash
# Set up this machine and run the appliance (gateway + local worker + managed nats-server):
#
#   bash scripts/run.sh [options of `pyoco-server up`...]
#
# Runs scripts/setup.sh (options through PYOCO_SETUP_DESKTOP=1, PYOCO_SETUP_BROWSER=1,
# PYOCO_SETUP_INTEROP=1), builds the release binary with `cargo build --release -p pyoco-cli`,
# then replaces itself with `target/release/pyoco-server up --with-nats "$@"`.
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
pyoco_find_cargo || die "cargo not found after setup" "add ~/.cargo/bin to PATH"

cd "$PYOCO_ROOT"
log "cargo build --release -p pyoco-cli"
t0=$SECONDS
cargo build --release -p pyoco-cli || die "cargo build --release -p pyoco-cli failed (output above)"
log "built in $(fmt_secs $((SECONDS - t0)))"

target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir="$PYOCO_ROOT/$target_dir"
bin="$target_dir/release/pyoco-server"
[[ -x $bin ]] || die "$bin was not built" "check the [[bin]] targets of crates/pyoco-cli"

log "exec $bin up --with-nats $*"
exec "$bin" up --with-nats "$@"
