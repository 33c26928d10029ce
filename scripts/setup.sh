#!/usr/bin/env bash
# Set up kmi on a fresh Debian/Ubuntu machine: the system packages it runs, then .venv.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# gnupg: gpg verifies upstream signatures; xz-utils and ca-certificates for downloads;
# qemu-utils (qemu-img) and libguestfs-tools (virt-customize, virt-sysprep, virt-sparsify)
# with a kernel for the libguestfs appliance (linux-image-amd64 on amd64 hosts); qemu-system
# for the KVM probe; debootstrap, apt-utils, extlinux and syslinux-common build the offline
# fixture image; docker-registry (a registry on loopback for the demo and tests), skopeo
# and umoci (independent clients the tests check published images with), zstd (opt-in zstd
# layers); git. Boot tests: qemu-system-x86 and qemu-system-arm with qemu-efi-aarch64 (UEFI
# for arm64 guests, on any host), genisoimage (the cloud-init NoCloud seed), openssh-client
# (the SSH check and its throw-away key).
SYSTEM_PACKAGES=(gnupg xz-utils ca-certificates git qemu-utils libguestfs-tools debootstrap
                 apt-utils extlinux syslinux-common docker-registry skopeo umoci zstd
                 qemu-system-x86 qemu-system-arm qemu-efi-aarch64 genisoimage openssh-client)
case "$(dpkg --print-architecture)" in
    amd64) SYSTEM_PACKAGES+=(linux-image-amd64) ;;
    arm64) SYSTEM_PACKAGES+=(linux-image-arm64) ;;
esac
# the tests build the arm64 fixture: on another arch, its programs run via qemu-user
[ "$(dpkg --print-architecture)" = arm64 ] || SYSTEM_PACKAGES+=(qemu-user-static binfmt-support)

missing=()
for package in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "setup: installing system packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: kmi needs Python 3.11 or newer; $python is $("$python" --version)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$python" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
echo "setup: ready ($(.venv/bin/python --version), $(.venv/bin/doit --version | head -1))"
