#!/usr/bin/env bash
# Installs the Debian packages the real-hypervisor tests need, when run as root
# and only those missing. Without root it says what is missing and carries on:
# the tests that need them fail (under CI=true) or skip, and say why.
set -euo pipefail
packages=(
  libvirt-dev pkg-config            # to build libvirt-python, which has no wheels
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
)
missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "system-deps: not root; missing Debian packages: ${missing[*]}" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
