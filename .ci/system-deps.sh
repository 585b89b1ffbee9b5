#!/usr/bin/env bash
# Installs the Debian packages the real-hypervisor tests need, when run as root
# and only those missing, and gives QEMU access to KVM where /dev/kvm exists.
# Without root it says what is missing and carries on: the tests that need
# them fail (under CI=true) or skip, and say why. Safe to run again.
set -euo pipefail
packages=(
  libvirt-dev pkg-config            # to build libvirt-python, which has no wheels
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
  postgresql                        # the service's fleet tests: a throwaway cluster of their own
  chromium chromium-driver          # the dashboard's tests, through Selenium
)
missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$package")
done
if [[ $(id -u) -ne 0 ]]; then
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "system-deps: not root; missing Debian packages: ${missing[*]}" >&2
  fi
  exit 0
fi
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "system-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# KVM: what Debian's udev rule and libvirt's packaging do on a full system. libvirt runs
# QEMU as libvirt-qemu and calls KVM usable only if that user can open /dev/kvm; if it
# cannot, every API call probes QEMU again. A libvirtd that is already running keeps the
# capabilities it probed, so this runs before the tests start any daemon (the KVM tests
# use a libvirtd of their own, started afterwards).
kvm_changes=()
if ! getent group kvm >/dev/null; then
  groupadd --system kvm
  kvm_changes+=("groupadd kvm")
fi
if ! getent group libvirt-qemu >/dev/null; then
  groupadd --system libvirt-qemu
  kvm_changes+=("groupadd libvirt-qemu")
fi
if ! id libvirt-qemu >/dev/null 2>&1; then
  useradd --system --gid libvirt-qemu --groups kvm --home-dir /var/lib/libvirt --no-create-home \
    --shell /usr/sbin/nologin --comment "Libvirt Qemu" libvirt-qemu
  kvm_changes+=("useradd libvirt-qemu")
elif ! id -nG libvirt-qemu | tr ' ' '\n' | grep -qx kvm; then
  usermod --append --groups kvm libvirt-qemu
  kvm_changes+=("usermod -aG kvm libvirt-qemu")
fi
# Best effort: where the device node cannot be changed (a read-only /dev, a user namespace),
# the KVM tests say why they cannot run; the rest of the suite must not die here.
if [[ -c /dev/kvm ]]; then
  if [[ $(stat -c %G /dev/kvm) != kvm ]]; then
    if chgrp kvm /dev/kvm; then
      kvm_changes+=("chgrp kvm /dev/kvm")
    else
      echo "system-deps: cannot give /dev/kvm to group kvm" >&2
    fi
  fi
  if (( (0$(stat -c %a /dev/kvm) & 060) != 060 )); then
    if chmod g+rw /dev/kvm; then
      kvm_changes+=("chmod g+rw /dev/kvm")
    else
      echo "system-deps: cannot make /dev/kvm group read-write" >&2
    fi
  fi
fi
if [[ ${#kvm_changes[@]} -gt 0 ]]; then
  echo "system-deps: ${kvm_changes[*]}"
fi
