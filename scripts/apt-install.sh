#!/usr/bin/env bash
# Install Debian packages non-interactively: apt-get update, then install without recommends.
# Uses sudo only when not root. Shared by `make servers-deps` and `.ci/run`.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 PACKAGE..." >&2
  exit 2
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "apt-install: need root or sudo to install: $*" >&2
    exit 1
  fi
  sudo=(sudo)
fi

echo "apt-install: installing $*"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "$@"
