#!/usr/bin/env bash
# Install ingle as a systemd service on a Debian/Ubuntu server (README, "Deploy on a server").
#
# What it does, each step only if not done already (running it twice changes nothing):
#   - creates the system user and group `ingle`;
#   - creates /opt/ingle/venv (its own Python venv) and pip-installs ingle into it,
#     from this source tree, a package index (--index-url) or a wheelhouse directory
#     (--find-links, offline);
#   - writes /etc/ingle/ingle.toml from deploy/ingle.toml.example if there is none;
#   - creates /var/lib/ingle (models and state) and /etc/ingle/credentials (bot tokens), and
#     writes a random management key there if there is none (root:ingle, mode 0640): over
#     TCP, pulling, deleting and copying models needs it (README "HTTP API");
#   - installs the units ingle.service and ingle-bot@.service (+ the GPU drop-in with
#     --gpu), then enables and starts ingle.service when systemd is running.
#
# --root DIR (or DESTDIR=DIR) installs into DIR instead of /: no user is created, no
# owner is changed and systemctl is never called, so tests and package builds can
# run it without touching the machine.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/install.sh [OPTIONS]

Install ingle into /opt/ingle/venv with hardened systemd units. Run as root.

Where ingle comes from (default: the source tree this script is in):
  --source DIR        pip-install this source tree or wheel file
  --find-links DIR    offline: install the `ingle` package and all its dependencies
                      from the wheels in DIR (pip --no-index --find-links DIR)
  --index-url URL     install the `ingle` package from this package index
  --python PATH       Python 3.11 to create the venv with (default: python3.11)
  CMAKE_ARGS=...      passed on to pip, e.g. CMAKE_ARGS="-DGGML_CUDA=on" for a CUDA build

What to install:
  --gpu               also install the GPU drop-in (ingle.service.d/gpu.conf)
  --no-start          enable ingle.service but do not start (or restart) it now
  --no-venv           skip the venv and pip (units, config and folders only)
  --root DIR          install into DIR instead of / (also: DESTDIR=DIR); implies no
                      user creation, no chown and no systemctl. It writes a management
                      key there too: leave etc/ingle/credentials out of any package built
                      from DIR, since each server needs a key of its own

Removing:
  --uninstall         stop and remove the units and /opt/ingle; keep the models in
                      /var/lib/ingle and the config in /etc/ingle
  --purge             with --uninstall: also delete /var/lib/ingle, /etc/ingle and the user

  -h, --help          show this help
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

say() {
    echo "install.sh: $*"
}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$SCRIPT_DIR")

ROOT=${DESTDIR:-}
SOURCE=""
FIND_LINKS=""
INDEX_URL=""
PYTHON=python3.11
GPU=0
START=1
VENV_STEP=1
UNINSTALL=0
PURGE=0

while (($#)); do
    case "$1" in
        --source) SOURCE=${2:?--source needs a directory or wheel}; shift ;;
        --find-links) FIND_LINKS=${2:?--find-links needs a directory}; shift ;;
        --index-url) INDEX_URL=${2:?--index-url needs a URL}; shift ;;
        --python) PYTHON=${2:?--python needs a path}; shift ;;
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        --gpu) GPU=1 ;;
        --no-start) START=0 ;;
        --no-venv) VENV_STEP=0 ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
    shift
done

if ((PURGE && !UNINSTALL)); then
    die "--purge only goes with --uninstall"
fi
if [[ -n $FIND_LINKS && -n $INDEX_URL ]]; then
    die "give either --find-links or --index-url, not both"
fi
if [[ -n $FIND_LINKS && ! -d $FIND_LINKS ]]; then
    die "--find-links $FIND_LINKS is not a directory"
fi
if [[ -n $ROOT ]]; then
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    [[ $ROOT == / ]] && ROOT=""
fi
# The real system is only touched without --root; there, root is required.
SYSTEM=0
[[ -z $ROOT ]] && SYSTEM=1
if ((SYSTEM)) && [[ $(id -u) -ne 0 ]]; then
    die "run as root (sudo $0), or use --root DIR to install into a folder"
fi

SERVICE_USER=ingle
OPT_DIR=$ROOT/opt/ingle
VENV=$OPT_DIR/venv
ETC_DIR=$ROOT/etc/ingle
CONFIG=$ETC_DIR/ingle.toml
CREDENTIALS_DIR=$ETC_DIR/credentials
STATE_DIR=$ROOT/var/lib/ingle
UNIT_DIR=$ROOT/etc/systemd/system
UNITS_SRC=$SCRIPT_DIR/systemd

systemd_running() {
    # sd_booted(3): systemd is PID 1 exactly when this directory exists.
    ((SYSTEM)) && [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1
}

# put_file SRC DEST MODE: copy only when the content or mode differs, so a rerun changes nothing.
put_file() {
    local src=$1 dest=$2 mode=$3
    mkdir -p "$(dirname "$dest")"
    if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
        [[ $(stat -c %a "$dest") == "${mode#0}" ]] || chmod "$mode" "$dest"
        return 1
    fi
    install -m "$mode" "$src" "$dest"
    say "installed ${dest#"$ROOT"}"
    return 0
}

# make_dir DIR MODE [OWNER:GROUP]: create or fix a folder; the owner only on the real system.
make_dir() {
    local dir=$1 mode=$2 owner=${3:-}
    [[ -d $dir ]] || say "created ${dir#"$ROOT"}"
    mkdir -p "$dir"
    chmod "$mode" "$dir"
    if ((SYSTEM)) && [[ -n $owner ]]; then
        chown "$owner" "$dir"
    fi
}

create_user() {
    if ! ((SYSTEM)); then
        return
    fi
    if ! getent group "$SERVICE_USER" >/dev/null; then
        groupadd --system "$SERVICE_USER"
        say "created the group $SERVICE_USER"
    fi
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        useradd --system --gid "$SERVICE_USER" --home-dir /var/lib/ingle --no-create-home \
            --shell /usr/sbin/nologin --comment "ingle LLM server" "$SERVICE_USER"
        say "created the user $SERVICE_USER"
    fi
}

install_venv() {
    if ! ((VENV_STEP)); then
        say "skipping the venv and pip (--no-venv)"
        return
    fi
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: install python3.11 and python3.11-venv, or pass --python"
    if [[ ! -x $VENV/bin/python ]]; then
        mkdir -p "$OPT_DIR"
        "$PYTHON" -m venv "$VENV"
        say "created the venv ${VENV#"$ROOT"}"
    fi
    local pip_args=(--disable-pip-version-check --no-input)
    local spec
    if [[ -n $FIND_LINKS ]]; then
        # Air-gapped: everything, llama-cpp-python included, comes from the wheelhouse.
        pip_args+=(--no-index --find-links "$FIND_LINKS")
    elif [[ -n $INDEX_URL ]]; then
        pip_args+=(--index-url "$INDEX_URL")
    fi
    if [[ -n $SOURCE ]]; then
        spec=$SOURCE
    elif [[ -n $FIND_LINKS || -n $INDEX_URL ]]; then
        spec=ingle
    else
        [[ -f $REPO_DIR/pyproject.toml ]] || die "no source tree at $REPO_DIR: pass --source, --find-links or --index-url"
        spec=$REPO_DIR
    fi
    say "installing $spec into ${VENV#"$ROOT"} (a source build of llama-cpp-python takes minutes)"
    # --upgrade-strategy only-if-needed: dependencies already satisfied are left alone on a rerun.
    "$VENV/bin/python" -m pip install "${pip_args[@]}" --upgrade-strategy only-if-needed "$spec"
    [[ -x $VENV/bin/ingle ]] || die "pip finished but ${VENV#"$ROOT"}/bin/ingle is missing"
    if [[ -f $REPO_DIR/README.md ]]; then
        put_file "$REPO_DIR/README.md" "$OPT_DIR/README.md" 0644 || true
    fi
}

install_config() {
    make_dir "$ETC_DIR" 0750 "root:$SERVICE_USER"
    # Bot tokens (LoadCredential= in ingle-bot@.service): readable by root only (0600); systemd
    # copies each into the bot's private $CREDENTIALS_DIRECTORY. The ingle group may pass through
    # the folder (0710, no listing) to read the management key, which is root:ingle 0640.
    make_dir "$CREDENTIALS_DIR" 0710 "root:$SERVICE_USER"
    write_management_key
    if [[ ! -e $CONFIG ]]; then
        install -m 0640 "$SCRIPT_DIR/ingle.toml.example" "$CONFIG"
        if ((SYSTEM)); then
            chown "root:$SERVICE_USER" "$CONFIG"
        fi
        say "wrote ${CONFIG#"$ROOT"} from ingle.toml.example"
    fi
    make_dir "$STATE_DIR" 0750 "$SERVICE_USER:$SERVICE_USER"
}

# The key that allows managing models over TCP: the service reads it (management_key_file), and
# so does `ingle pull/rm/cp` run by root or a member of the ingle group. Written once, never replaced.
write_management_key() {
    local key_file=$CREDENTIALS_DIR/management-key
    [[ -e $key_file ]] && return 0
    local partial=$key_file.partial
    # 32 random bytes as hex; od is in coreutils, so no openssl is needed.
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$partial" && echo >>"$partial")
    chmod 0640 "$partial"
    if ((SYSTEM)); then
        chown "root:$SERVICE_USER" "$partial"
    fi
    mv "$partial" "$key_file"
    say "wrote the management key ${key_file#"$ROOT"}"
}

install_units() {
    local changed=0
    put_file "$UNITS_SRC/ingle.service" "$UNIT_DIR/ingle.service" 0644 && changed=1
    put_file "$UNITS_SRC/ingle-bot@.service" "$UNIT_DIR/ingle-bot@.service" 0644 && changed=1
    put_file "$UNITS_SRC/ingle-bot@slack.service.d/app-token.conf" \
        "$UNIT_DIR/ingle-bot@slack.service.d/app-token.conf" 0644 && changed=1
    if ((GPU)); then
        put_file "$UNITS_SRC/ingle-gpu.conf" "$UNIT_DIR/ingle.service.d/gpu.conf" 0644 && changed=1
    fi
    if ! systemd_running; then
        if ((SYSTEM)); then
            say "systemd is not running here: enable the service later with 'systemctl enable --now ingle'"
        fi
        return 0
    fi
    ((changed)) && systemctl daemon-reload
    if ! systemctl is-enabled --quiet ingle.service; then
        systemctl enable ingle.service
    fi
    if ((START)); then
        if ((changed)) || ! systemctl is-active --quiet ingle.service; then
            systemctl restart ingle.service
            say "started ingle.service"
        fi
    fi
}

uninstall() {
    if systemd_running; then
        local units
        units=$(systemctl list-units --all --plain --no-legend 'ingle-bot@*.service' | awk '{print $1}')
        # shellcheck disable=SC2086  # one unit name per word
        systemctl disable --now ingle.service $units 2>/dev/null || true
    fi
    rm -f "$UNIT_DIR/ingle.service" "$UNIT_DIR/ingle-bot@.service" \
        "$UNIT_DIR/ingle.service.d/gpu.conf" "$UNIT_DIR/ingle-bot@slack.service.d/app-token.conf"
    # An admin's own drop-ins (systemctl edit) stay; the folders go only when empty.
    rmdir "$UNIT_DIR/ingle.service.d" "$UNIT_DIR/ingle-bot@slack.service.d" 2>/dev/null || true
    if systemd_running; then
        systemctl daemon-reload
    fi
    rm -rf "$OPT_DIR"
    say "removed the units and ${OPT_DIR#"$ROOT"}"
    if ((PURGE)); then
        rm -rf "$STATE_DIR" "$ETC_DIR"
        if ((SYSTEM)) && getent passwd "$SERVICE_USER" >/dev/null; then
            userdel "$SERVICE_USER"
            say "removed the user $SERVICE_USER"
        fi
        say "purged ${STATE_DIR#"$ROOT"} (models) and ${ETC_DIR#"$ROOT"}"
    else
        say "kept the models in ${STATE_DIR#"$ROOT"} and the config in ${ETC_DIR#"$ROOT"} (--purge deletes them)"
    fi
}

if ((UNINSTALL)); then
    uninstall
    exit 0
fi

create_user
install_venv
install_config
install_units

cat <<EOF
install.sh: done. Next steps:
  sudo -u $SERVICE_USER /opt/ingle/venv/bin/ingle pull default     # fetch the default model
  sudo -u $SERVICE_USER /opt/ingle/venv/bin/ingle doctor           # check everything
  journalctl -u ingle -f                                             # follow the log
  Edit /etc/ingle/ingle.toml, then: systemctl reload ingle (or restart)
  Managing models over TCP takes /etc/ingle/credentials/management-key (the ingle group may read it)
EOF
