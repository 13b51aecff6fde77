#!/usr/bin/env bash
# Makes sure qemu's user-mode x86-64 emulator is installed (Debian's qemu-user), so that the tests
# can run onnxruntime on an emulated AVX2-only CPU (-cpu Haswell-v4: no AVX-512, no VNNI), where
# its u8×s8 matmul kernel saturates. Installs it with apt-get when missing (needs root, as on CI).
# Prints the emulator's path.
set -euo pipefail
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "qemu-x86_64 is missing: install Debian's qemu-user (apt-get install qemu-user)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq qemu-user >/dev/null
fi
command -v qemu-x86_64
