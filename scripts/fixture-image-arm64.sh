#!/usr/bin/env bash
# Build the arm64 stand-in for an upstream cloud image on any host: Debian bookworm for
# arm64 (systemd, cloud-init, openssh-server, the cloud kernel; deliberately *without*
# qemu-guest-agent, as the amd64 fixture) on a GPT qcow2 with an EFI system partition booted
# by systemd-boot, as UEFI firmware (qemu-efi-aarch64) boots it, plus a local apt repository
# holding the arm64 qemu-guest-agent and tree with exactly the packages the image lacks for
# them: on an amd64 host, sysprep installs the agent by booting the image under emulation.
#
#   scripts/fixture-image-arm64.sh OUTDIR      -> OUTDIR/fixture.qcow2, OUTDIR/repo/
#
# Needs root, debootstrap, qemu-user-static with binfmt_misc (arm64 programs run in the
# chroot through it), libguestfs-tools (guestfish), qemu-utils and Debian's package mirror.
# kmi.demo.fixture caches the result keyed by the hash of this file.
set -euo pipefail

out=${1:?usage: fixture-image-arm64.sh OUTDIR}
mirror=${KMI_FIXTURE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
work=$(mktemp -d "${TMPDIR:-/tmp}/kmi-fixture-arm64.XXXXXX")
root=$work/rootfs
unmount() { for m in dev/pts dev sys proc; do umount "$root/$m" 2>/dev/null || true; done; }
trap 'unmount; rm -rf "$work" "$out.tmp"' EXIT
export LIBGUESTFS_BACKEND=${LIBGUESTFS_BACKEND:-direct}
export DEBIAN_FRONTEND=noninteractive
in_root() { chroot "$root" "$@"; }
say() { echo "fixture-arm64: [$((SECONDS / 60))m$((SECONDS % 60))s] $*"; }

interpreter=""  # on an arm64 host, none: its programs run natively
if [ "$(dpkg --print-architecture)" != arm64 ]; then
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        mountpoint -q /proc/sys/fs/binfmt_misc \
            || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        update-binfmts --enable qemu-aarch64 2>/dev/null || true
    fi
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || {
        echo "fixture-arm64: arm64 programs cannot run here: install qemu-user-static and" \
            "binfmt-support, and make sure binfmt_misc is mounted" >&2
        exit 1
    }
    interpreter=$(sed -n 's/^interpreter //p' /proc/sys/fs/binfmt_misc/qemu-aarch64)
fi

say "debootstrap $suite for arm64 (minbase, emulated second stage)"
debootstrap --arch=arm64 --foreign --variant=minbase --include=systemd-sysv,udev,kmod \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log"; exit 1; }
# the binfmt entry names its interpreter by path: it must exist inside the chroot too
if [ -n "$interpreter" ]; then
    mkdir -p "$root$(dirname "$interpreter")"
    cp "$(readlink -f "$interpreter")" "$root$interpreter"
fi
in_root /debootstrap/debootstrap --second-stage >"$work/second-stage.log" 2>&1 \
    || { tail -30 "$work/second-stage.log" "$root/debootstrap/debootstrap.log"; exit 1; }
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
printf 'deb %s %s main\n' "$mirror" "$suite" >"$root/etc/apt/sources.list"
in_root apt-get -qq update
# The initramfs holds only what finds and mounts the root file system on QEMU's virt machine.
# Its default (MODULES=most) copies hundreds of modules, each by an emulated cp: minutes under
# qemu-user; this list takes seconds.
mkdir -p "$root/etc/initramfs-tools/conf.d"
echo MODULES=list >"$root/etc/initramfs-tools/conf.d/kmi-fixture.conf"
printf '%s\n' virtio_pci virtio_mmio virtio_blk virtio_scsi sd_mod ext4 \
    >>"$root/etc/initramfs-tools/modules"
say "kernel, cloud-init, openssh-server, systemd-boot"
in_root apt-get -qq install -y --no-install-recommends \
    linux-image-cloud-arm64 initramfs-tools cloud-init openssh-server netbase ifupdown \
    isc-dhcp-client sudo e2fsprogs systemd-boot-efi >"$work/install.log" 2>&1 \
    || { tail -40 "$work/install.log"; exit 1; }

echo "kmi-fixture" >"$root/etc/hostname"
echo "LABEL=kmi-root / ext4 defaults 0 1" >"$root/etc/fstab"
# cloud-init writes the NIC's DHCP stanza into interfaces.d/, as on Debian's cloud images
printf 'source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n' \
    >"$root/etc/network/interfaces"
printf 'datasource_list: [ NoCloud, None ]\nlocale: C.UTF-8\n' \
    >"$root/etc/cloud/cloud.cfg.d/90-kmi-fixture.cfg"
# A machine identity, as a careless image would carry: sysprep must remove it.
systemd-machine-id-setup --root="$root" >/dev/null

say "local apt repository (qemu-guest-agent, tree and what they need)"
in_root apt-get clean
in_root apt-get -qq install --download-only --no-install-recommends -y qemu-guest-agent tree
rm -rf "$out.tmp"
mkdir -p "$out.tmp/repo"
mv "$root"/var/cache/apt/archives/*.deb "$out.tmp/repo/"
(cd "$out.tmp/repo" && apt-ftparchive packages . >Packages)
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/*
[ -z "$interpreter" ] || rm -f "$root$interpreter"
kernel=$(cd "$root/boot" && ls vmlinuz-* | tail -1)
initrd=$(cd "$root/boot" && ls initrd.img-* | tail -1)
unmount

say "GPT disk, EFI system partition with systemd-boot"
esp=$work/esp
mkdir -p "$esp/EFI/BOOT" "$esp/loader/entries"
cp "$root/usr/lib/systemd/boot/efi/systemd-bootaa64.efi" "$esp/EFI/BOOT/BOOTAA64.EFI"
cp "$root/boot/$kernel" "$esp/vmlinuz"
cp "$root/boot/$initrd" "$esp/initrd.img"
printf 'default debian.conf\ntimeout 0\n' >"$esp/loader/loader.conf"
printf 'title Debian\nlinux /vmlinuz\ninitrd /initrd.img\noptions %s\n' \
    "root=LABEL=kmi-root ro console=ttyAMA0,115200n8" >"$esp/loader/entries/debian.conf"
tar -C "$root" -cf "$work/rootfs.tar" .
guestfish -N "$work/disk.img=disk:2G" -- \
    part-init /dev/sda gpt : \
    part-add /dev/sda p 2048 264191 : \
    part-add /dev/sda p 264192 -2048 : \
    part-set-gpt-type /dev/sda 1 C12A7328-F81F-11D2-BA4B-00A0C93EC93B : \
    mkfs vfat /dev/sda1 : \
    mkfs ext4 /dev/sda2 label:kmi-root : \
    mount /dev/sda2 / : \
    tar-in "$work/rootfs.tar" / : \
    mkdir-p /boot/efi : \
    mount /dev/sda1 /boot/efi : \
    mkdir-p /boot/efi/EFI/BOOT : \
    mkdir-p /boot/efi/loader/entries : \
    upload "$esp/EFI/BOOT/BOOTAA64.EFI" /boot/efi/EFI/BOOT/BOOTAA64.EFI : \
    upload "$esp/vmlinuz" /boot/efi/vmlinuz : \
    upload "$esp/initrd.img" /boot/efi/initrd.img : \
    upload "$esp/loader/loader.conf" /boot/efi/loader/loader.conf : \
    upload "$esp/loader/entries/debian.conf" /boot/efi/loader/entries/debian.conf : \
    umount-all
qemu-img convert -c -O qcow2 "$work/disk.img" "$out.tmp/fixture.qcow2"

rm -rf "$out"
mv "$out.tmp" "$out"
say "done: $out/fixture.qcow2 ($(du -h "$out/fixture.qcow2" | cut -f1)), $(ls "$out/repo" | grep -c '\.deb$') packages in $out/repo"
