#!/usr/bin/env bash
# System packages the tests use, from Debian's registry. Installed only when root and missing;
# otherwise prints what to run. Each block is idempotent. Called by `make system`.
set -u
need_apt=()
# (each feature adds the Debian packages it needs below, with the command that proves they exist)
# the report test opens report.html in a real browser (tests/test_report.py)
command -v chromium >/dev/null || need_apt+=(chromium)
# the tune test starts a throwaway PostgreSQL server (tests/test_tune_postgres.py); Debian puts
# initdb/pg_ctl in /usr/lib/postgresql/<version>/bin, off PATH
# (as root the test runs the server as the 'postgres' user, which Debian's package creates)
if ! { command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 \
   || { [ "$(id -u)" = 0 ] && ! getent passwd postgres >/dev/null; }; then
  need_apt+=(postgresql)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null 2>&1 \
      || echo "warning: apt-get install ${need_apt[*]} failed; tests that need them will skip"
  else
    echo "note: run 'sudo apt-get install ${need_apt[*]}' for the tests that need them"
  fi
fi
exit 0
