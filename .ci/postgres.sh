# Sourced by .ci/run: a throwaway PostgreSQL server on a free loopback port for the tests that
# need a real database (hm3 search's shared study). Exports HM3_TEST_POSTGRES_URL when the server
# runs and stops it on exit; otherwise says why, and those tests skip with that reason.
# PostgreSQL comes from Debian's packages when missing (needs root, as on CI).
# (|| true: under .ci/run's `set -euo pipefail` a failed ls must not end the run)
hm3_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true; }
if [ -z "$(hm3_pg_bin)" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
        >/dev/null 2>&1 || export HM3_TEST_POSTGRES_SKIP="apt-get install postgresql failed"
fi
HM3_PG_BIN="$(hm3_pg_bin)"
if [ -z "$HM3_PG_BIN" ]; then
    export HM3_TEST_POSTGRES_SKIP="PostgreSQL is not installed (${HM3_TEST_POSTGRES_SKIP:-not root or no apt-get})"
    echo "postgresql: $HM3_TEST_POSTGRES_SKIP; the PostgreSQL tests will be skipped"
else
    HM3_PG_DIR="$(mktemp -d)"
    HM3_PG_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    hm3_pg() {  # run a PostgreSQL binary as the postgres user (root) or as ourselves
        if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
    }
    [ "$(id -u)" = 0 ] && chown postgres "$HM3_PG_DIR"
    if hm3_pg "$HM3_PG_BIN/initdb -D $HM3_PG_DIR/data -A trust -U postgres" >/dev/null 2>&1 &&
        hm3_pg "$HM3_PG_BIN/pg_ctl -D $HM3_PG_DIR/data -l $HM3_PG_DIR/log -w \
            -o '-h 127.0.0.1 -p $HM3_PG_PORT -k $HM3_PG_DIR' start" >/dev/null 2>&1; then
        export HM3_TEST_POSTGRES_URL="postgresql+psycopg2://postgres@127.0.0.1:$HM3_PG_PORT/postgres"
        trap 'hm3_pg "$HM3_PG_BIN/pg_ctl -D $HM3_PG_DIR/data -m fast stop" >/dev/null 2>&1; rm -rf "$HM3_PG_DIR"' EXIT
        echo "postgresql: test server on 127.0.0.1:$HM3_PG_PORT"
    else
        export HM3_TEST_POSTGRES_SKIP="the PostgreSQL test server did not start (see $HM3_PG_DIR/log)"
        echo "postgresql: $HM3_TEST_POSTGRES_SKIP; its tests will be skipped"
    fi
fi
