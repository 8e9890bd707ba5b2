#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on loopback for the tests and benches, and prints the
# URL to give them:
#
#   export INBOX_TEST_POSTGRES=$(scripts/throwaway-postgres.sh)
#   cargo test --workspace
#
# The cluster lives in a new temporary directory (initdb), listens on 127.0.0.1 only, on a
# free port (or $PGPORT), with trust authentication for loopback, and keeps fsync and
# synchronous_commit on (what the benches measure is durable). Stop it with
#   pg_ctl -D <dir> stop       (the directory is printed on stderr)
# Needs PostgreSQL's server binaries (Debian: apt-get install postgresql). As root, the
# cluster runs as the `postgres` user, since PostgreSQL refuses to run as root.
set -euo pipefail

bindir=""
for d in /usr/lib/postgresql/*/bin; do
  [ -x "$d/initdb" ] && bindir="$d"
done
if [ -z "$bindir" ] && command -v initdb >/dev/null; then
  bindir="$(dirname "$(command -v initdb)")"
fi
if [ -z "$bindir" ]; then
  echo "throwaway-postgres: no initdb found; install PostgreSQL (apt-get install postgresql)" >&2
  exit 1
fi

port="${PGPORT:-}"
if [ -z "$port" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi
dir="$(mktemp -d /tmp/inbox-pg.XXXXXX)"
as_user=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$dir"
  as_user=(runuser -u postgres --)
fi
"${as_user[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-instructions >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
"${as_user[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=on -c synchronous_commit=on" \
  start >&2 || { cat "$dir/server.log" >&2; exit 1; }
echo "throwaway-postgres: cluster in $dir/data, log $dir/server.log; stop with: ${as_user[*]} $bindir/pg_ctl -D $dir/data stop" >&2
echo "postgres://postgres@127.0.0.1:$port/postgres"
