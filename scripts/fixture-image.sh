#!/usr/bin/env bash
# Build the offline stand-in for an upstream cloud image: a small Debian bookworm system
# (systemd, cloud-init, openssh-server, a kernel and GRUB; deliberately *without*
# qemu-guest-agent) on a partitioned qcow2, plus a local apt repository holding
# qemu-guest-agent and tree with exactly the packages the image lacks for them.
#
#   scripts/fixture-image.sh OUTDIR      -> OUTDIR/fixture.qcow2, OUTDIR/repo/
#
# Needs root, debootstrap, libguestfs-tools (guestfish, virt-customize), qemu-utils and
# apt-utils, and Debian's package mirror. kmi.demo.fixture caches the result keyed by the
# hash of this file: change anything here and the fixture is rebuilt.
set -euo pipefail

out=${1:?usage: fixture-image.sh OUTDIR}
mirror=${KMI_FIXTURE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
work=$(mktemp -d "${TMPDIR:-/tmp}/kmi-fixture.XXXXXX")
root=$work/rootfs
unmount() { for m in dev/pts dev sys proc; do umount "$root/$m" 2>/dev/null || true; done; }
trap 'unmount; rm -rf "$work" "$out.tmp"' EXIT
export LIBGUESTFS_BACKEND=${LIBGUESTFS_BACKEND:-direct}
export DEBIAN_FRONTEND=noninteractive
in_root() { chroot "$root" "$@"; }

echo "fixture: debootstrap $suite (minbase) from $mirror"
debootstrap --variant=minbase --include=systemd-sysv,udev,kmod \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" "$root/debootstrap/debootstrap.log"; exit 1; }
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
printf 'deb %s %s main\n' "$mirror" "$suite" >"$root/etc/apt/sources.list"
in_root apt-get -qq update
echo "fixture: kernel, GRUB, cloud-init, openssh-server"
in_root apt-get -qq install -y --no-install-recommends \
    linux-image-cloud-amd64 grub-pc initramfs-tools cloud-init openssh-server netbase \
    ifupdown isc-dhcp-client sudo e2fsprogs >"$work/install.log" 2>&1 \
    || { tail -40 "$work/install.log"; exit 1; }

echo "kmi-fixture" >"$root/etc/hostname"
echo "LABEL=kmi-root / ext4 defaults 0 1" >"$root/etc/fstab"
printf 'auto lo\niface lo inet loopback\n' >"$root/etc/network/interfaces"
cat >"$root/etc/default/grub" <<'EOF'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0,115200n8 console=tty0"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --speed=115200"
EOF
printf 'datasource_list: [ NoCloud, None ]\n' >"$root/etc/cloud/cloud.cfg.d/90-kmi-fixture.cfg"
# A machine identity, as a careless image would carry: sysprep must remove it.
systemd-machine-id-setup --root="$root" >/dev/null

echo "fixture: local apt repository (qemu-guest-agent, tree and what they need)"
in_root apt-get clean
in_root apt-get -qq install --download-only --no-install-recommends -y qemu-guest-agent tree
rm -rf "$out.tmp"
mkdir -p "$out.tmp/repo"
mv "$root"/var/cache/apt/archives/*.deb "$out.tmp/repo/"
(cd "$out.tmp/repo" && apt-ftparchive packages . >Packages)
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/*
unmount

echo "fixture: partitioned disk"
tar -C "$root" -cf "$work/rootfs.tar" .
guestfish -N "$work/disk.img=disk:2G" -- \
    part-init /dev/sda mbr : \
    part-add /dev/sda p 2048 -1 : \
    part-set-bootable /dev/sda 1 true : \
    mkfs ext4 /dev/sda1 label:kmi-root : \
    mount /dev/sda1 / : \
    tar-in "$work/rootfs.tar" / : \
    umount-all
virt-customize -q --format raw -a "$work/disk.img" --no-network \
    --run-command 'grub-install --target=i386-pc /dev/sda && update-grub' >"$work/grub.log" 2>&1 \
    || { tail -30 "$work/grub.log"; exit 1; }
qemu-img convert -c -O qcow2 "$work/disk.img" "$out.tmp/fixture.qcow2"

rm -rf "$out"
mv "$out.tmp" "$out"
echo "fixture: $out/fixture.qcow2 ($(du -h "$out/fixture.qcow2" | cut -f1)), $(ls "$out/repo" | grep -c '\.deb$') packages in $out/repo"
