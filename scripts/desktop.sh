#!/usr/bin/env bash
# Set up this machine and start the desktop app (a window that runs the managed nats-server,
# the gateway and a local worker, with a settings window), in one command:
#
#   bash scripts/desktop.sh
#
# Run it as your normal user from a desktop session (it needs $DISPLAY or $WAYLAND_DISPLAY);
# the apt step asks for sudo. It runs scripts/setup.sh --with-desktop, builds the release app
# with `cargo build --release -p pyoco-desktop-app --features custom-protocol` (a few minutes the
# first time), then replaces itself with `target/release/pyoco-desktop`.
# The app's settings live in ~/.config/pyoco-server/.env (the settings window edits it); its
# data (NATS store, synced wheels, Python venv) in ~/.local/share/pyoco-server.
# Without a display, run the same stack headless with scripts/run.sh.
set -euo pipefail

LOG_TAG="desktop"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if pyoco_should_drop_to_sudo_user; then
  bash "$PYOCO_SCRIPTS_DIR/setup.sh" --apt-only --with-desktop
  pyoco_exec_as_sudo_user bash "${BASH_SOURCE[0]}" "$@"
fi

if [[ -z ${DISPLAY:-} && -z ${WAYLAND_DISPLAY:-} ]]; then
  die "no display (DISPLAY and WAYLAND_DISPLAY are unset)" \
    "start it from a desktop session as your own user: bash scripts/desktop.sh" \
    "(sudo drops DISPLAY), or run the same stack without a window: sudo bash scripts/run.sh"
fi

bash "$PYOCO_SCRIPTS_DIR/setup.sh" --with-desktop || die "setup failed (see the ERROR lines above)"
pyoco_find_cargo || die "cargo not found after setup" "add ~/.cargo/bin to PATH"

cd "$PYOCO_ROOT"
log "cargo build --release -p pyoco-desktop-app --features custom-protocol"
t0=$SECONDS
cargo build --release -p pyoco-desktop-app --features custom-protocol ||
  die "building the desktop app failed (output above)"
log "built in $(fmt_secs $((SECONDS - t0)))"

bin="$(pyoco_target_dir)/release/pyoco-desktop"
[[ -x $bin ]] || die "$bin was not built" "check the [[bin]] target of src-tauri/Cargo.toml"

log "exec $bin"
exec "$bin" "$@"
