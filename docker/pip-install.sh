#!/bin/sh
# The one install command of every image and of CI: the project with the given extras, resolved
# exactly to the lock file. Usage: docker/pip-install.sh EXTRAS [--editable]
set -eu
extras="$1"
here=$(cd "$(dirname "$0")/.." && pwd)
if [ "${2:-}" = "--editable" ]; then
  exec python -m pip install --no-cache-dir -c "$here/constraints.txt" -e "$here[$extras]"
fi
exec python -m pip install --no-cache-dir -c "$here/constraints.txt" "$here[$extras]"
