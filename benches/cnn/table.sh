#!/usr/bin/env bash
# Prints issue 11's per-model table (benches/cnn/table.py: the ConvNet fixtures and the real ConvNets of
# benches/realmodels/fetch_cnn.sh compiled with --pipeline ivit; float ops, int-vs-float agreement in
# onnxruntime and tract, compile time, latencies, checker) after the CPU flags it depends on, and writes
# the same to benches/cnn/table.txt. Builds intone (release) unless INTONE=/path/to/intone is given;
# runs fetch_cnn.sh first when target/realmodels/cnn is missing. Takes about 10 minutes on 2 cores.
# Usage: benches/cnn/table.sh [--repeat N] [--samples N] [--only REGEX]   (arguments go to table.py)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
py=$("$root/../shared/tools/torch-env.sh" "$root/../venv-torch" | tail -1)
if [ -z "${INTONE:-}" ]; then
  cargo build --release --quiet
fi
intone=${INTONE:-$root/target/release/intone}
[ -d target/realmodels/cnn/models ] || benches/realmodels/fetch_cnn.sh >&2
{
  echo "Written by benches/cnn/table.sh (rewritten on every run)."
  echo
  echo "command: ${INTONE:+INTONE=$INTONE }benches/cnn/table.sh $*"
  echo "intone: $intone, built $(date -r "$intone" '+%F %T'); HEAD $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src passes || echo ', src/ or passes/ with uncommitted changes')"
  echo "CPU flags (grep -o 'avx[^ ]*\|vnni' /proc/cpuinfo | sort -u): $(grep -o 'avx[^ ]*\|vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo
  "$py" benches/cnn/table.py --intone "$intone" "$@"
} | tee benches/cnn/table.txt
