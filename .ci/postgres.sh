#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests (tests/test_study.py runs a sweep against it).
#
# Source it, then call cnnspec_pg_start: on success it exports
#   CNNSPEC_TEST_PG_URL=postgresql+psycopg2://postgres@127.0.0.1:PORT/cnnspec_test
# and returns 0; on failure it exports CNNSPEC_TEST_PG_SKIP (why) and returns 1, so the caller
# can go on and the PostgreSQL test skips with that reason. cnnspec_pg_stop removes everything.
#
#   source .ci/postgres.sh && cnnspec_pg_start && trap cnnspec_pg_stop EXIT
#
# Run directly (.ci/postgres.sh) it starts a server and prints the URL and the stop command.
#
# What it does: finds initdb/pg_ctl (on PATH, else Debian's /usr/lib/postgresql/*/bin); if there
# are none and we are root on Debian, installs the `postgresql` package with apt-get
# (non-interactive, quiet); creates a cluster in a new temp folder owned by the `postgres` user
# (trust authentication, listening on 127.0.0.1 only, on a free port, fsync off: it is thrown
# away), starts it and creates the database cnnspec_test. Nothing outside the temp folder is
# configured or started; Debian's own cluster service is left alone.

_cnnspec_pg_bindir() {
    local d
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
        echo "$d"
        return 0
    fi
    return 1
}

_cnnspec_pg_fail() {
    export CNNSPEC_TEST_PG_SKIP="$1"
    echo "postgres.sh: $1" >&2
    return 1
}

# run a command as the cluster's owner (postgres when we are root, else ourselves)
_cnnspec_pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su postgres -s /bin/sh -c '"$0" "$@"' -- "$@"
        fi
    else
        "$@"
    fi
}

cnnspec_pg_start() {
    local bindir dir port
    unset CNNSPEC_TEST_PG_SKIP
    bindir=$(_cnnspec_pg_bindir) || bindir=""
    if [ -z "$bindir" ]; then
        if [ "$(id -u)" != 0 ]; then
            _cnnspec_pg_fail "PostgreSQL is not installed and installing it needs root"
            return 1
        fi
        if ! command -v apt-get >/dev/null 2>&1; then
            _cnnspec_pg_fail "PostgreSQL is not installed and there is no apt-get to install it"
            return 1
        fi
        echo "postgres.sh: installing Debian's postgresql package (apt-get)" >&2
        if ! { DEBIAN_FRONTEND=noninteractive apt-get -qq update \
               && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y \
                      --no-install-recommends --no-upgrade postgresql; } \
               >/tmp/cnnspec-pg-apt.log 2>&1; then
            _cnnspec_pg_fail "apt-get install postgresql failed (log: /tmp/cnnspec-pg-apt.log)"
            return 1
        fi
        bindir=$(_cnnspec_pg_bindir) || {
            _cnnspec_pg_fail "postgresql installed, but no initdb/pg_ctl found"
            return 1
        }
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        _cnnspec_pg_fail "running as root but there is no postgres user to own the cluster"
        return 1
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/cnnspec-pg.XXXXXX") || {
        _cnnspec_pg_fail "cannot make a temp folder"
        return 1
    }
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
    fi
    export CNNSPEC_PG_DIR="$dir" CNNSPEC_PG_BIN="$bindir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') || {
        _cnnspec_pg_fail "cannot find a free port"
        return 1
    }
    if ! _cnnspec_pg_as_owner "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
            --no-sync >"$dir/initdb.log" 2>&1; then
        _cnnspec_pg_fail "initdb failed (log: $dir/initdb.log)"
        return 1
    fi
    if ! _cnnspec_pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off" \
            start >"$dir/pg_ctl.log" 2>&1; then
        _cnnspec_pg_fail "the server did not start (log: $dir/server.log)"
        return 1
    fi
    if ! _cnnspec_pg_as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres \
            cnnspec_test >"$dir/createdb.log" 2>&1; then
        _cnnspec_pg_fail "createdb failed (log: $dir/createdb.log)"
        return 1
    fi
    export CNNSPEC_TEST_PG_URL="postgresql+psycopg2://postgres@127.0.0.1:$port/cnnspec_test"
    echo "postgres.sh: $("$bindir/postgres" --version) at $CNNSPEC_TEST_PG_URL," \
         "cluster in $dir" >&2
    return 0
}

cnnspec_pg_stop() {
    local dir="${1:-${CNNSPEC_PG_DIR:-}}" bindir="${CNNSPEC_PG_BIN:-}"
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    [ -n "$bindir" ] || bindir=$(_cnnspec_pg_bindir) || true
    if [ -n "$bindir" ] && [ -f "$dir/data/postmaster.pid" ]; then
        _cnnspec_pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop \
            >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-start}" in
        start)
            cnnspec_pg_start || exit 1
            echo "export CNNSPEC_TEST_PG_URL=$CNNSPEC_TEST_PG_URL"
            echo "# stop: CNNSPEC_PG_BIN=$CNNSPEC_PG_BIN $0 stop $CNNSPEC_PG_DIR"
            ;;
        stop)
            cnnspec_pg_stop "${2:?usage: $0 stop DIR}"
            ;;
        *)
            echo "usage: $0 [start | stop DIR]" >&2
            exit 2
            ;;
    esac
fi
