#!/usr/bin/env bash
# A PostgreSQL for the tests on 127.0.0.1:5432 (trust auth, a database `test`): does nothing
# when one already answers there; otherwise installs Debian's package (apt-get, as root) and
# starts a cluster listening on 127.0.0.1 only. Idempotent and quiet. Used by `make test`.
# INTERLOCK_PG_PORT picks another port (its cluster lives in interlock-test-PORT).
set -euo pipefail

PORT="${INTERLOCK_PG_PORT:-5432}"
HOST=127.0.0.1

ready() {
    command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h "$HOST" -p "$PORT"
}

ensure_test_db() {
    psql -h "$HOST" -p "$PORT" -U postgres -d postgres -tAq \
        -c "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
        || createdb -h "$HOST" -p "$PORT" -U postgres test
}

if ready; then
    ensure_test_db
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-postgres: no PostgreSQL on $HOST:$PORT and not root to install one" >&2
    exit 1
fi

if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq postgresql >/dev/null
fi

BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
export PATH="$BIN:$PATH"
DATA=/var/lib/postgresql/interlock-test-$PORT
if [ ! -s "$DATA/PG_VERSION" ]; then
    install -d -o postgres -g postgres -m 0700 "$DATA"
    su postgres -c "$BIN/initdb -D $DATA -A trust -U postgres --no-instructions" >/dev/null
fi
install -d -o postgres -g postgres /var/run/postgresql
su postgres -c "$BIN/pg_ctl -D $DATA -l $DATA/server.log -w -o '-c listen_addresses=$HOST -p $PORT' start" >/dev/null

for _ in $(seq 1 30); do
    ready && break
    sleep 1
done
ready || { echo "ensure-postgres: PostgreSQL did not start (see $DATA/server.log)" >&2; exit 1; }
ensure_test_db
