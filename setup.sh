#!/usr/bin/env bash
# Sets up a lab host, idempotently: the Debian packages from ansible/host-packages.txt
# (only those missing; needs root or sudo), then .venv with lab and its dev tools.
# --tests: also the packages only the test suite needs (tests/packages.txt); ./test.sh passes it.
set -euo pipefail
cd "$(dirname "$0")"

lists=(ansible/host-packages.txt)
[ "${1:-}" = "--tests" ] && lists+=(tests/packages.txt)
mapfile -t wanted < <(sed -e 's/#.*//' "${lists[@]}" | awk 'NF {print $1}')
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: lab needs Python >= 3.11 ($python is $("$python" --version 2>&1))" >&2
    exit 3
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
# The distribution was called "lab" before it got its own name (qemu-fault-lab); drop the old one.
if .venv/bin/python -m pip show -q lab >/dev/null 2>&1; then .venv/bin/python -m pip uninstall -q -y lab; fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
echo "setup: ready (.venv/bin/lab)"
