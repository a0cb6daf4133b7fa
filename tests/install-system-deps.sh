#!/usr/bin/env bash
# Debian packages the test suite runs against: the reference registry, the real
# loaders (podman, skopeo), image tools, and a browser for the notebook test.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(docker-registry podman skopeo buildah runc uidmap apache2-utils debootstrap chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
