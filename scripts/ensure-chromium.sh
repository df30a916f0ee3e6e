#!/usr/bin/env bash
# Debian's Chromium for the browser tests (Playwright drives it through executable_path: its own
# browser download cannot work on these machines). Does nothing when /usr/bin/chromium exists;
# otherwise installs the `chromium` package (apt-get, as root). Idempotent and quiet; never
# fails `make test` by itself: without a Chromium the browser tests skip and say why.
# INTERLOCK_CHROMIUM names another executable.
set -uo pipefail

EXE="${INTERLOCK_CHROMIUM:-/usr/bin/chromium}"
[ -x "$EXE" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-chromium: $EXE missing and not root to install it: browser tests will skip" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# another apt may hold the lock (a parallel job): wait for it rather than fail
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
if ! apt_get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
    apt_get update -qq >/dev/null 2>&1
    apt_get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
        || echo "ensure-chromium: apt-get install chromium failed: browser tests will skip" >&2
fi
exit 0
