#!/bin/sh
# Op counts per transformer block of compiled models (see block_ops.py).
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
py=$("$root/../shared/tools/python-env.sh" "$root/.venv-oracle" | tail -1)
"$py" "$root/benches/block_ops.py" "$@"
