# shellcheck shell=bash
# Helpers shared by scripts/setup.sh, scripts/test.sh and scripts/run.sh.
# Source it (after setting LOG_TAG); it does nothing on its own.

PYOCO_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYOCO_ROOT="$(cd "$PYOCO_SCRIPTS_DIR/.." && pwd)"
LOG_TAG="${LOG_TAG:-pyoco}"

log() { printf '%s: %s\n' "$LOG_TAG" "$*"; }
warn() { printf '%s: WARNING: %s\n' "$LOG_TAG" "$*" >&2; }
die() {
  printf '%s: ERROR: %s\n' "$LOG_TAG" "$1" >&2
  shift
  local line
  for line in "$@"; do printf '%s:        %s\n' "$LOG_TAG" "$line" >&2; done
  exit 1
}
# One line per step: "setup: <step name padded> <what happened>".
step() { printf '%s: %-26s %s\n' "$LOG_TAG" "$1" "$2"; }

# Seconds as "42s" or "3m05s".
fmt_secs() {
  local s=$1
  if ((s >= 60)); then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi
}

# The app data dir, exactly as the Rust `directories` crate computes it on Linux for
# ProjectDirs::from("io", "pyoco", "pyoco-server"): $XDG_DATA_HOME (only when absolute,
# like the crate) or ~/.local/share, plus "pyoco-server". PYOCO_DATA_DIR overrides it.
pyoco_data_dir() {
  local dir
  if [[ -n ${PYOCO_DATA_DIR:-} ]]; then
    dir=$PYOCO_DATA_DIR
    [[ $dir == /* ]] || dir="$PWD/$dir"
  elif [[ ${XDG_DATA_HOME:-} == /* ]]; then
    dir="$XDG_DATA_HOME/pyoco-server"
  else
    dir="${HOME:?HOME is not set}/.local/share/pyoco-server"
  fi
  printf '%s\n' "${dir%/}"
}

# The cargo target dir of this checkout, absolute: $CARGO_TARGET_DIR (relative to the checkout,
# as cargo takes it when run there), else <checkout>/target.
pyoco_target_dir() {
  local dir=${CARGO_TARGET_DIR:-target}
  [[ $dir == /* ]] || dir="$PYOCO_ROOT/$dir"
  printf '%s\n' "${dir%/}"
}

# "NAME==VERSION" pin of one package in a requirements file (first match), or nothing.
pinned_version() {
  local file=$1 name=$2
  sed -n "s/^[[:space:]]*${name}[[:space:]]*==[[:space:]]*\\([^[:space:];#]*\\).*/\\1/p" "$file" | head -n1
}

# shellcheck disable=SC2034 # used by the scripts that source this file
PYOCO_RUNNER_REQUIREMENTS="$PYOCO_SCRIPTS_DIR/requirements-runner.txt"
PYOCO_INTEROP_REQUIREMENTS="$PYOCO_SCRIPTS_DIR/requirements-interop.txt"
# shellcheck disable=SC2034 # used by setup.sh
PYOCO_TESTTOOLS_REQUIREMENTS="$PYOCO_SCRIPTS_DIR/requirements-testtools.txt"
# The pyoco-server version the interop venv is named after (single source: the pin).
pyoco_interop_version() {
  local v
  v=$(pinned_version "$PYOCO_INTEROP_REQUIREMENTS" pyoco-server)
  [[ -n $v ]] || die "no 'pyoco-server==X' pin in $PYOCO_INTEROP_REQUIREMENTS"
  printf '%s\n' "$v"
}

# Put ~/.cargo/bin on PATH when cargo is not found (sudo's secure_path drops it).
# Returns non-zero when there is still no cargo.
pyoco_find_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    local d="${CARGO_HOME:-${HOME:-/nonexistent}/.cargo}/bin"
    if [[ -x $d/cargo ]]; then
      PATH="$d:$PATH"
      export PATH
    fi
  fi
  command -v cargo >/dev/null 2>&1
}

# clippy-driver of the active toolchain (rustup's proxy, or the one beside rustc), or non-zero.
pyoco_clippy_driver() {
  local d
  d=$(command -v clippy-driver 2>/dev/null) && "$d" --version >/dev/null 2>&1 &&
    { printf '%s\n' "$d"; return 0; }
  d="$(rustc --print sysroot 2>/dev/null)/bin/clippy-driver"
  [[ -x $d ]] && "$d" --version >/dev/null 2>&1 && { printf '%s\n' "$d"; return 0; }
  return 1
}

# True when we are root only because a normal user ran us through sudo and that user owns
# the checkout: then cargo, target/ and the data dir belong to that user, and only apt needs
# root. PYOCO_SETUP_KEEP_ROOT=1 turns this off (everything then runs as root).
pyoco_should_drop_to_sudo_user() {
  [[ ${EUID:-$(id -u)} -eq 0 ]] || return 1
  [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]] || return 1
  [[ -z ${PYOCO_SETUP_KEEP_ROOT:-} ]] || return 1
  command -v sudo >/dev/null 2>&1 || return 1
  [[ "$(stat -c %U "$PYOCO_ROOT" 2>/dev/null)" == "$SUDO_USER" ]] || return 1
}

# exec "$@" as $SUDO_USER with their HOME, keeping the variables that steer these scripts.
pyoco_exec_as_sudo_user() {
  local -a keep=()
  local v
  while IFS= read -r v; do
    keep+=("$v=${!v}")
  done < <(compgen -e | grep -E '^(PYOCO_|CARGO_TERM_|CARGO_TARGET_DIR$|CARGO_INCREMENTAL$|RUST_LOG$|RUST_BACKTRACE$|NEXTEST_|CI$|PIP_INDEX_URL$|PIP_EXTRA_INDEX_URL$|DISPLAY$|XAUTHORITY$|WAYLAND_DISPLAY$|XDG_RUNTIME_DIR$)' || true)
  log "root through sudo: running the per-user part as '$SUDO_USER' (PYOCO_SETUP_KEEP_ROOT=1 keeps root)"
  exec sudo -u "$SUDO_USER" -H -- env "${keep[@]}" "$@"
}
