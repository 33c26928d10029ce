#!/usr/bin/env bash
# A Debian 13 (trixie) root holding Debian's skopeo and cosign, for the tests to check the
# signatures and attestations kmi publishes with clients nobody here wrote, through chroot
# (root only). Debian 12's own skopeo (1.9) is built with its sigstore support patched out
# (it refuses such a policy with "Debian-local change: sigstore disabled"); trixie's (1.18)
# has it. Debian 12 has no cosign; trixie has 2.5.
# About a minute and a half here; cached like the fixture images (kmi.demo.fixture).
# Usage: skopeo-root.sh OUT   (writes OUT/root, with OUT/root/usr/bin/skopeo last)
set -euo pipefail
out=${1:?usage: skopeo-root.sh OUT}
mirror=${KMI_FIXTURE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
work="$out/root.tmp"
rm -rf "$work" "$out/root"
mkdir -p "$out"
step() { echo "skopeo-root: $*"; }
step "debootstrap trixie (minbase) from $mirror"
debootstrap --variant=minbase trixie "$work" "$mirror" > "$out/debootstrap.log" 2>&1 \
    || { tail -20 "$out/debootstrap.log"; exit 1; }
step "apt-get install skopeo cosign"
DEBIAN_FRONTEND=noninteractive chroot "$work" apt-get install -y -qq --no-install-recommends \
    skopeo cosign > "$out/apt.log" 2>&1 || { tail -20 "$out/apt.log"; exit 1; }
chroot "$work" apt-get clean
step "$(chroot "$work" skopeo --version); cosign $(chroot "$work" dpkg-query -W -f '${Version}' cosign)"
mv "$work" "$out/root"
