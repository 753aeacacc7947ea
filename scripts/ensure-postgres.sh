#!/usr/bin/env bash
# The challenge server's tests run every database test on SQLite and on a throwaway PostgreSQL cluster that
# they start themselves (initdb + pg_ctl from Debian's `postgresql` package). Install it when we can (root on
# Debian/Ubuntu); without it those PostgreSQL runs are skipped with a reason, so this never fails setup.
pg_ok() { ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null; }
pg_ok && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "skybench: installing postgresql for the challenge server's tests"
  (apt-get install -y -qq postgresql >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null 2>&1; }) && pg_ok && exit 0
fi
echo "skybench: PostgreSQL (initdb, pg_ctl) is not installed; the server tests' PostgreSQL runs will be skipped" \
     "(install Debian's 'postgresql' package to run them)" >&2
exit 0
