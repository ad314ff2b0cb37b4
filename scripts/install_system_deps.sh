#!/usr/bin/env bash
# System packages that pip cannot provide (Debian / Ubuntu):
#   chromium  headless browser for scripts/viewer_screenshot.py (proof that the live viewer renders; a test uses it)
#   ffmpeg    needed by `ns-render camera-path|interpolate|spiral`, even for image output (no test needs it)
# Usage: install_system_deps.sh [COMMAND ...]   (default: chromium ffmpeg). `make test` asks for chromium only.
# Idempotent: does nothing when every command asked for is already on PATH. Runs as root, or through sudo.
set -euo pipefail

declare -A PACKAGE_OF_COMMAND=([chromium]=chromium [ffmpeg]=ffmpeg)
wanted=("$@")
[ "${#wanted[@]}" -gt 0 ] || wanted=(chromium ffmpeg)

missing=()
for command_name in "${wanted[@]}"; do
    if [ -z "${PACKAGE_OF_COMMAND[$command_name]+known}" ]; then
        echo "install_system_deps: unknown command '$command_name', expected one of: ${!PACKAGE_OF_COMMAND[*]}" >&2
        exit 2
    fi
    if ! command -v "$command_name" >/dev/null 2>&1; then
        missing+=("${PACKAGE_OF_COMMAND[$command_name]}")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install_system_deps: ${wanted[*]} already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install_system_deps: need root or sudo to install: ${missing[*]}" >&2
    exit 1
fi

echo "install_system_deps: installing ${missing[*]}"
"${as_root[@]}" apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
