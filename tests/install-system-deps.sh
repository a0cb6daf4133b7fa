#!/usr/bin/env bash
# Debian packages the test suite runs against: the reference registry, the real
# loaders (podman, skopeo), image tools, and a browser for the notebook test.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# Runs apt-get as root, through sudo when started by another user.
packages=(docker-registry podman skopeo buildah runc uidmap apache2-utils debootstrap chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" apt-get update -q
  "${as_root[@]}" apt-get install -y -q "${missing[@]}"
fi
