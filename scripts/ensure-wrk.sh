#!/usr/bin/env bash
# wrk, the HTTP load generator `make bench` drives the --workers figures with (Debian's `wrk`
# package). Does nothing when it is on PATH; otherwise installs it (apt-get, as root). Never
# fails `make bench` by itself: without wrk the bench uses its own raw-socket client
# (interlock.bench.load) and says so beside the figure.
set -uo pipefail

command -v wrk >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-wrk: wrk missing and not root to install it: the bench uses its own client" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
if ! apt_get install -y -qq --no-install-recommends wrk >/dev/null 2>&1; then
    apt_get update -qq >/dev/null 2>&1
    apt_get install -y -qq --no-install-recommends wrk >/dev/null 2>&1 \
        || echo "ensure-wrk: apt-get install wrk failed: the bench uses its own client" >&2
fi
exit 0
