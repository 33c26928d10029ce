#!/usr/bin/env bash
# Build the offline stand-in for an upstream cloud image: a small Debian bookworm system
# (systemd, cloud-init, openssh-server, a kernel and EXTLINUX; deliberately *without*
# qemu-guest-agent) on a partitioned qcow2, plus a local apt repository holding
# qemu-guest-agent and tree with exactly the packages the image lacks for them.
#
#   scripts/fixture-image.sh OUTDIR      -> OUTDIR/fixture.qcow2, OUTDIR/repo/
#
# Needs root, debootstrap, libguestfs-tools (guestfish), extlinux and syslinux-common (the
# bootloader, installed from inside the libguestfs appliance, where grub-install cannot
# probe the disk), qemu-utils, apt-utils, and Debian's package mirror. kmi.demo.fixture
# caches the result keyed by the hash of this file: change anything here and the fixture is
# rebuilt.
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
echo "fixture: kernel, cloud-init, openssh-server, growpart"
# cloud-guest-utils: growpart, which cloud-init's growpart module runs to grow the root
# partition onto a larger disk (the root-grows criterion)
in_root apt-get -qq install -y --no-install-recommends \
    linux-image-cloud-amd64 initramfs-tools cloud-init openssh-server netbase \
    ifupdown isc-dhcp-client sudo e2fsprogs cloud-guest-utils >"$work/install.log" 2>&1 \
    || { tail -40 "$work/install.log"; exit 1; }

echo "kmi-fixture" >"$root/etc/hostname"
# ext3, not ext4: EXTLINUX cannot read ext4's 64bit layout.
echo "LABEL=kmi-root / ext3 defaults 0 1" >"$root/etc/fstab"
# cloud-init writes the NIC's DHCP stanza into interfaces.d/, as on Debian's cloud images
printf 'source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n' \
    >"$root/etc/network/interfaces"
kernel=$(cd "$root/boot" && ls vmlinuz-* | tail -1)
initrd=$(cd "$root/boot" && ls initrd.img-* | tail -1)
mkdir -p "$root/boot/extlinux"
{
    echo "SERIAL 0 115200"
    echo "DEFAULT debian"
    echo "TIMEOUT 10"
    echo "LABEL debian"
    echo "  LINUX /boot/$kernel"
    echo "  INITRD /boot/$initrd"
    echo "  APPEND root=LABEL=kmi-root ro console=tty0 console=ttyS0,115200n8"
} >"$root/boot/extlinux/extlinux.conf"
# C.UTF-8 needs no locales package: cloud-init's locale module succeeds, status is "done"
printf 'datasource_list: [ NoCloud, None ]\nlocale: C.UTF-8\n' \
    >"$root/etc/cloud/cloud.cfg.d/90-kmi-fixture.cfg"
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

echo "fixture: partitioned disk with EXTLINUX"
tar -C "$root" -cf "$work/rootfs.tar" .
guestfish -N "$work/disk.img=disk:2G" -- \
    part-init /dev/sda mbr : \
    part-add /dev/sda p 2048 -1 : \
    part-set-bootable /dev/sda 1 true : \
    mkfs ext3 /dev/sda1 label:kmi-root : \
    mount /dev/sda1 / : \
    tar-in "$work/rootfs.tar" / : \
    extlinux /boot/extlinux : \
    upload /usr/lib/syslinux/mbr/mbr.bin /boot/mbr.bin : \
    copy-file-to-device /boot/mbr.bin /dev/sda size:440 : \
    rm /boot/mbr.bin : \
    umount-all
qemu-img convert -c -O qcow2 "$work/disk.img" "$out.tmp/fixture.qcow2"

rm -rf "$out"
mv "$out.tmp" "$out"
echo "fixture: $out/fixture.qcow2 ($(du -h "$out/fixture.qcow2" | cut -f1)), $(ls "$out/repo" | grep -c '\.deb$') packages in $out/repo"
