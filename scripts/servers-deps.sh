#!/usr/bin/env bash
# Make sure the real servers the integration tests start are installed: PostgreSQL (initdb and
# pg_ctl) and redis-server. Installs from Debian only what is missing; a no-op otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Prints the PostgreSQL server bin dir (holding initdb and pg_ctl), or nothing.
# pg_config alone proves nothing: libpq-dev ships it without the server.
postgres_bindir() {
  local dir candidates=()
  if command -v pg_config >/dev/null 2>&1; then
    candidates+=("$(pg_config --bindir 2>/dev/null || true)")
  fi
  # Newest version first.
  while IFS= read -r dir; do candidates+=("$dir"); done \
    < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r)
  for dir in "${candidates[@]}"; do
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return 0
    fi
  done
}

missing=()
[ -n "$(postgres_bindir)" ] || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)

if [ "${#missing[@]}" -gt 0 ]; then
  bash "$here/apt-install.sh" "${missing[@]}"
fi

bindir="$(postgres_bindir)"
if [ -z "$bindir" ] || ! command -v redis-server >/dev/null 2>&1; then
  echo "servers-deps: PostgreSQL or redis-server still missing after install" >&2
  exit 1
fi
echo "servers-deps: $("$bindir/postgres" --version) in $bindir; $(redis-server --version)"
