#!/usr/bin/env bash
# Sets up a lab host, idempotently: the Debian packages from ansible/host-packages.txt
# (only those missing; needs root or sudo), then .venv with lab and its dev tools.
# --tests: also the packages only the test suite needs (tests/packages.txt); ./test.sh passes it.
# Packages are installed with services held off (policy-rc.d): lab needs their binaries, and a line's
# `service-off=UNIT,...` field names units to leave disabled (the tests' sshd binary must not become a
# system-wide sshd on port 22).
set -euo pipefail
cd "$(dirname "$0")"

lists=(ansible/host-packages.txt)
[ "${1:-}" = "--tests" ] && lists+=(tests/packages.txt)
mapfile -t wanted < <(sed -e 's/#.*//' "${lists[@]}" | awk 'NF {print $1}')
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Units to leave disabled: only those of packages this run installs (an sshd the host already serves stays).
units=()
for pkg in "${missing[@]}"; do
    mapfile -t -O "${#units[@]}" units < <(sed -e 's/#.*//' "${lists[@]}" | awk -v p="$pkg" '$1 == p' | tr ' \t' '\n\n' | sed -n 's/^service-off=//p' | tr ',' '\n')
done
if ((${#missing[@]})); then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "setup: missing packages: ${missing[*]}" >&2
            echo "setup: run as root: apt-get update && apt-get install --no-install-recommends ${missing[*]}  (then ./setup.sh again)" >&2
            exit 3
        fi
        sudo="sudo"
    fi
    echo "setup: installing ${missing[*]}"
    policy=${LAB_POLICY_RC_D:-/usr/sbin/policy-rc.d}
    made_policy=""
    trap '[ -z "$made_policy" ] || $sudo rm -f "$policy"' EXIT  # before the file exists: no path leaves it behind
    if [ ! -e "$policy" ]; then
        made_policy=1
        printf '#!/bin/sh\n# ./setup.sh: no service starts while lab installs packages\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod 755 "$policy"
    fi
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
    if ((${#units[@]})) && command -v systemctl >/dev/null 2>&1 && [ -d "${LAB_SYSTEMD_RUN:-/run/systemd/system}" ]; then
        $sudo systemctl disable --now "${units[@]}" >/dev/null 2>&1 || true
    fi
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: lab needs Python >= 3.11 ($python is $("$python" --version 2>&1))" >&2
    exit 3
fi
# pip only when what it installs from changed (an editable install follows the sources by itself): a no-op
# ./setup.sh takes a fraction of a second instead of pip's ~8 s of resolving. The stamp is written last.
stamp=.venv/.lab-setup
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1) $("$python" -V 2>&1)"
if [ -x .venv/bin/lab ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "setup: ready (.venv/bin/lab)"
    exit 0
fi
rm -f "$stamp"
# A venv whose creation was interrupted has no working pip: start it again rather than fail on every rerun.
if [ -e .venv ] && ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    echo "setup: .venv is incomplete (no pip); creating it again"
    rm -rf .venv
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
# The distribution was called "lab" before it got its own name (qemu-fault-lab); drop the old one.
if .venv/bin/python -m pip show -q lab >/dev/null 2>&1; then .venv/bin/python -m pip uninstall -q -y lab; fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
echo "$want" > "$stamp"
echo "setup: ready (.venv/bin/lab)"
