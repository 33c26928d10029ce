"""Build a mirror tree in each upstream's own layout, file names and checksum formats,
signed with keys generated on the spot (for the tests and the offline demo).

URLs are the real upstream URLs; the tree stores `https://HOST/PATH` at `<root>/HOST/PATH`,
which is how KMI_MIRROR maps them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml


class SigningKey:
    """A throw-away OpenPGP signing key in its own gpg home."""

    def __init__(self, home: Path, uid: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
        self.home = home
        if not self._gpg("--list-secret-keys"):  # a home made by an earlier run is reused
            self._gpg("--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
        listing = self._gpg("--with-colons", "--list-keys").decode()
        self.fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        self.public = self._gpg("--armor", "--export")

    def close(self) -> None:
        """Stop the gpg-agent that signing started."""
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], check=False)

    def _gpg(self, *args: str, data: bytes | None = None) -> bytes:
        argv = [
            "gpg",
            "--batch",
            "--yes",
            "--homedir",
            str(self.home),
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            *args,
        ]
        done = subprocess.run(argv, input=data, capture_output=True, check=True)
        return done.stdout

    def clearsign(self, text: str) -> bytes:
        return self._gpg("--clearsign", "--output", "-", data=text.encode())

    def detach_sign(self, data: bytes, armor: bool = True) -> bytes:
        return self._gpg(
            *(["--armor"] if armor else []), "--detach-sign", "--output", "-", data=data
        )


@dataclass
class Image:
    url: str
    data: bytes

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def dir(self) -> str:
        return self.url.rsplit("/", 1)[0]

    def hexdigest(self, algorithm: str = "sha256") -> str:
        return hashlib.new(algorithm, self.data).hexdigest()


def image_bytes(label: str, size: int = 64 * 1024) -> bytes:
    """Deterministic, distinct, incompressible-looking bytes for one fake image."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha512(f"{label}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


class Upstreams:
    """Writes upstream layouts under `root`; one method per upstream."""

    def __init__(self, root: Path, key: SigningKey) -> None:
        self.root = root
        self.key = key
        self.releases: list[dict[str, str]] = []  # fedora releases.json
        self.products: dict[str, dict[str, object]] = {}  # ubuntu simplestreams

    def put(self, url: str, data: bytes | str) -> Path:
        parts = urlsplit(url)
        path = self.root / parts.netloc / parts.path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def image(self, url: str, size: int = 64 * 1024) -> Image:
        img = Image(url, image_bytes(url, size))
        self.put(url, img.data)
        return img

    def files(self, folder: str, names: list[str]) -> dict[str, Image]:
        """Other files upstream publishes beside an image (aliases, other variants)."""
        return {name: self.image(f"{folder}/{name}", 4096) for name in names}

    def fedora(
        self, version: str, release: str, uarch: str = "x86_64", signer: SigningKey | None = None
    ) -> Image:
        """releases.json (minified, as it may be served) lists GCE, EC2, UKI and Generic
        Cloud_Base entries; the clear-signed CHECKSUM beside them lists them all."""
        tree = "fedora-secondary" if uarch == "s390x" else "fedora/linux"
        base = f"https://download.fedoraproject.org/pub/{tree}/releases/{version}/Cloud"
        folder = f"{base}/{uarch}/images"
        img = self.image(f"{folder}/Fedora-Cloud-Base-Generic-{version}-{release}.{uarch}.qcow2")
        others = self.files(
            folder,
            [
                f"Fedora-Cloud-Base-GCE-{version}-{release}.{uarch}.tar.gz",
                f"Fedora-Cloud-Base-AmazonEC2-{version}-{release}.{uarch}.raw.xz",
                f"Fedora-Cloud-Base-UEFI-UKI-{version}-{release}.{uarch}.qcow2",
            ],
        )
        everything = [img, *others.values()]
        text = f"# Fedora-Cloud-{version}-{release}-{uarch}-CHECKSUM\n" + "".join(
            f"# {i.name}: {len(i.data)} bytes\nSHA256 ({i.name}) = {i.hexdigest()}\n"
            for i in everything
        )
        checksum = f"{folder}/Fedora-Cloud-{version}-{release}-{uarch}-CHECKSUM"
        self.put(checksum, (signer or self.key).clearsign(text))
        for i in everything:
            uki = "UEFI-UKI" in i.name
            self.releases.append(
                {
                    "version": version,
                    "arch": uarch,
                    "link": i.url,
                    "variant": "Cloud",
                    "subvariant": "Cloud_Base_UKI" if uki else "Cloud_Base",
                    "sha256": i.hexdigest(),
                    "size": str(len(i.data)),
                }
            )
        self.releases += [
            {
                "version": version,
                "arch": uarch,
                "variant": "Server",
                "subvariant": "Server",
                "link": f"{base}/../Server/{uarch}/iso/Fedora-Server-netinst-{uarch}-{version}.iso",
                "sha256": "0" * 64,
                "size": "1",
            },
            {  # a beta of the next release, without a digest yet
                "version": f"{int(version) + 1} Beta",
                "arch": uarch,
                "variant": "Cloud",
                "subvariant": "Cloud_Base",
                "link": f"{folder}/Fedora-Cloud-Base-Generic-{int(version) + 1}_Beta-1.1"
                f".{uarch}.qcow2",
                "sha256": "",
                "size": "1",
            },
        ]
        self.put(
            "https://fedoraproject.org/releases.json",
            json.dumps(self.releases, separators=(",", ":")),
        )
        return img

    def centos(self, version: str, date: str, uarch: str = "x86_64") -> Image:
        """CHECKSUM (BSD) gives every file a `# <file>: <n> bytes` line, -latest aliases too."""
        folder = f"https://cloud.centos.org/centos/{version}-stream/{uarch}/images"
        img = self.image(f"{folder}/CentOS-Stream-GenericCloud-{version}-{date}.0.{uarch}.qcow2")
        self.put(f"{folder}/CentOS-Stream-GenericCloud-{version}-latest.{uarch}.qcow2", img.data)
        alias = Image(
            f"{folder}/CentOS-Stream-GenericCloud-{version}-latest.{uarch}.qcow2", img.data
        )
        others = self.files(
            folder,
            [
                f"CentOS-Stream-Container-Base-{version}-{date}.0.{uarch}.tar.xz",
                f"CentOS-Stream-ec2-{version}-{date}.0.{uarch}.raw.xz",
                f"CentOS-Stream-GenericCloud-{uarch}-{version}-{date}.0.{uarch}.qcow2",
                f"CentOS-Stream-Vagrant-{version}-{date}.0.{uarch}.vagrant-libvirt.box",
            ],
        )
        for i in [*others.values(), img, alias]:
            self._append(
                f"{folder}/CHECKSUM",
                f"# {i.name}: {len(i.data)} bytes\nSHA256 ({i.name}) = {i.hexdigest()}\n",
            )
        return img

    def almalinux(
        self,
        version: str,
        minor: str,
        date: str,
        uarch: str = "x86_64",
        signer: SigningKey | None = None,
    ) -> Image:
        """CHECKSUM (GNU) lists the dated GenericCloud image, its ext4 and OpenNebula siblings
        and their -latest aliases; a detached CHECKSUM.asc signs it."""
        folder = f"https://repo.almalinux.org/almalinux/{version}/cloud/{uarch}/images"
        build = f"{version}.{minor}-{date}"
        img = self.image(f"{folder}/AlmaLinux-{version}-GenericCloud-{build}.{uarch}.qcow2")
        ext4 = self.image(f"{folder}/AlmaLinux-{version}-GenericCloud-ext4-{build}.{uarch}.qcow2")
        nebula = self.image(f"{folder}/AlmaLinux-{version}-OpenNebula-{build}.{uarch}.qcow2")
        rows = [
            (img, img.name),
            (ext4, ext4.name),
            (ext4, f"AlmaLinux-{version}-GenericCloud-ext4-latest.{uarch}.qcow2"),
            (img, f"AlmaLinux-{version}-GenericCloud-latest.{uarch}.qcow2"),
            (nebula, nebula.name),
            (nebula, f"AlmaLinux-{version}-OpenNebula-latest.{uarch}.qcow2"),
        ]
        for source, name in rows[1:]:
            self.put(f"{folder}/{name}", source.data)
        sums = "".join(f"{i.hexdigest()}  {name}\n" for i, name in rows).encode()
        self.put(f"{folder}/CHECKSUM", sums)
        self.put(f"{folder}/CHECKSUM.asc", (signer or self.key).detach_sign(sums))
        return img

    def rocky(self, version: str, minor: str, date: str, uarch: str = "x86_64") -> Image:
        """Per-image `<image>.CHECKSUM` (BSD) beside a `-Base.latest` alias."""
        folder = f"https://dl.rockylinux.org/pub/rocky/{version}/images/{uarch}"
        img = self.image(
            f"{folder}/Rocky-{version}-GenericCloud-Base-{version}.{minor}-{date}.0.{uarch}.qcow2"
        )
        self.put(f"{folder}/Rocky-{version}-GenericCloud-Base.latest.{uarch}.qcow2", img.data)
        line = f"SHA256 ({img.name}) = {img.hexdigest()}\n"
        self.put(f"{img.url}.CHECKSUM", line)
        self._append(f"{folder}/CHECKSUM", line)
        return img

    def ubuntu(
        self,
        version: str,
        name: str,
        date: str,
        arch: str = "amd64",
        signer: SigningKey | None = None,
    ) -> Image:
        """simplestreams items whose paths are relative to releases/ (the folder holding
        streams/); SHA256SUMS with `*` markers lists every file of the build folder."""
        root = "https://cloud-images.ubuntu.com/releases"
        rel = f"server/releases/{name}/release-{date}"
        stem = f"ubuntu-{version}-server-cloudimg-{arch}"
        img = self.image(f"{root}/{rel}/{stem}.img")
        suffixes = {
            "disk-kvm.img": "-disk-kvm.img",
            "lxd.tar.xz": "-lxd.tar.xz",
            "root.tar.xz": "-root.tar.xz",
            "squashfs": ".squashfs",
            "tar.gz": ".tar.gz",
            "ova": ".ova",
            "vmdk": ".vmdk",
            "azure.vhd.zip": "-azure.vhd.zip",
            "wsl.rootfs.tar.gz": "-wsl.rootfs.tar.gz",
            "vagrant.box": "-vagrant.box",
        }
        others = self.files(img.dir, [stem + s for s in suffixes.values()])
        sums = self._append(
            f"{img.dir}/SHA256SUMS",
            "".join(f"{i.hexdigest()} *{i.name}\n" for i in [*others.values(), img]),
        )
        self.put(f"{img.dir}/SHA256SUMS.gpg", (signer or self.key).detach_sign(sums))
        product = self.products.setdefault(
            f"com.ubuntu.cloud:server:{version}:{arch}",
            {"arch": arch, "release": name, "version": version, "versions": {}},
        )
        versions = product["versions"]
        assert isinstance(versions, dict)
        items = {
            ftype: {
                "ftype": ftype,
                "path": f"{rel}/{stem}{suffix}",
                "sha256": others[stem + suffix].hexdigest(),
                "size": len(others[stem + suffix].data),
            }
            for ftype, suffix in suffixes.items()
        }
        items["disk1.img"] = {
            "ftype": "disk1.img",
            "path": f"{rel}/{img.name}",
            "sha256": img.hexdigest(),
            "size": len(img.data),
        }
        versions[date] = {"items": items, "label": "release", "pubname": f"{stem}-{date}"}
        doc = {
            "content_id": "com.ubuntu.cloud:released:download",
            "format": "products:1.0",
            "products": self.products,
        }
        self.put(f"{root}/streams/v1/com.ubuntu.cloud:released:download.json", json.dumps(doc))
        return img

    def debian(self, version: str, name: str, build: str, arch: str = "amd64") -> Image:
        """A dated folder: SHA512SUMS lists every variant and format of the build."""
        folder = f"https://cloud.debian.org/images/cloud/{name}/{build}"
        img = self.image(f"{folder}/debian-{version}-genericcloud-{arch}-{build}.qcow2")
        others = self.files(
            folder,
            [
                f"debian-{version}-genericcloud-{arch}-{build}.json",
                f"debian-{version}-genericcloud-{arch}-{build}.raw",
                f"debian-{version}-genericcloud-{arch}-{build}.tar.xz",
                f"debian-{version}-generic-{arch}-{build}.qcow2",
                f"debian-{version}-nocloud-{arch}-{build}.qcow2",
            ],
        )
        self._append(
            f"{folder}/SHA512SUMS",
            "".join(f"{i.hexdigest('sha512')}  {i.name}\n" for i in [*others.values(), img]),
        )
        latest = f"https://cloud.debian.org/images/cloud/{name}/latest"
        self.put(f"{latest}/debian-{version}-genericcloud-{arch}.qcow2", img.data)
        return img

    def opensuse(self, version: str, uarch: str = "x86_64", build: str = "") -> Image:
        """The fixed name (`Leap-16.0-Minimal-VM.x86_64-Cloud.qcow2`, s390x with the arch twice)
        and, given `build`, its build-numbered twin; each with a `.sha256` (one line; two spaces
        from 16.0, one before) and a detached `.sha256.asc`."""
        folder = f"https://download.opensuse.org/distribution/leap/{version}/appliances"
        prefix = "" if version.startswith("16") else "openSUSE-"
        machine = f"{uarch}-{uarch}" if uarch == "s390x" else uarch
        fixed = self.image(f"{folder}/{prefix}Leap-{version}-Minimal-VM.{machine}-Cloud.qcow2")
        self._sha256_signed(fixed, "  " if version.startswith("16") else " ")
        self.files(folder, [f"{prefix}Leap-{version}-Minimal-VM.{machine}-kvm-and-xen.qcow2"])
        if not build:
            return fixed
        twin = Image(
            f"{folder}/{prefix}Leap-{version}-Minimal-VM.{machine}-Cloud-Build{build}.qcow2",
            fixed.data,
        )
        self.put(twin.url, twin.data)
        self._sha256_signed(twin, "  " if version.startswith("16") else " ")
        return twin

    def _sha256_signed(self, img: Image, gap: str) -> None:
        sums = f"{img.hexdigest()}{gap}{img.name}\n".encode()
        self.put(f"{img.url}.sha256", sums)
        self.put(f"{img.url}.sha256.asc", self.key.detach_sign(sums))

    def alpine(
        self, version: str, patch: str, uarch: str = "x86_64-bios", signer: SigningKey | None = None
    ) -> Image:
        """`nocloud_` names before 3.24, `generic_` from 3.24, `-tiny-` siblings; a bare
        `.sha512` and a detached `.asc` over the image itself."""
        folder = f"https://dl-cdn.alpinelinux.org/alpine/v{version}/releases/cloud"
        kind = "generic" if [int(p) for p in version.split(".")] >= [3, 24] else "nocloud"
        img = self.image(f"{folder}/{kind}_alpine-{version}.{patch}-{uarch}-cloudinit-r0.qcow2")
        tiny = self.image(f"{folder}/{kind}_alpine-{version}.{patch}-{uarch}-tiny-r0.qcow2")
        for i in (img, tiny):
            self.put(f"{i.url}.sha512", f"{i.hexdigest('sha512')}\n")
            self.put(f"{i.url}.asc", (signer or self.key).detach_sign(i.data))
        return img

    def archlinux(self, build: str, signer: SigningKey | None = None) -> Image:
        """A `v<build>/` folder; every file, the `.SHA256` too, has a binary `.sig`."""
        folder = f"https://geo.mirror.pkgbuild.com/images/v{build}"
        img = self.image(f"{folder}/Arch-Linux-x86_64-cloudimg-{build}.qcow2")
        basic = self.image(f"{folder}/Arch-Linux-x86_64-basic-{build}.qcow2")
        for i in (img, basic):
            sums = f"{i.hexdigest()}  {i.name}\n".encode()
            self.put(f"{i.url}.SHA256", sums)
            self.put(f"{i.url}.SHA256.sig", (signer or self.key).detach_sign(sums, armor=False))
            self.put(f"{i.url}.sig", (signer or self.key).detach_sign(i.data, armor=False))
        self.put(
            "https://geo.mirror.pkgbuild.com/images/latest/Arch-Linux-x86_64-cloudimg.qcow2",
            img.data,
        )
        return img

    def amazonlinux(self, release: str, uarch: str = "x86_64", latest: bool = True) -> Image:
        name = f"al2023-kvm-{release}-kernel-6.1-{uarch}.xfs.gpt.qcow2"
        base = "https://cdn.amazonlinux.com/al2023/os-images"
        img = self.image(f"{base}/{release}/kvm/{name}")
        self.put(f"{img.dir}/SHA256SUMS", f"{img.hexdigest()}  {name}\n")
        if latest:  # the moving folder holds only the newest build's files
            shutil.rmtree(self.root / "cdn.amazonlinux.com/al2023/os-images/latest", True)
            self.put(f"{base}/latest/kvm/{name}", img.data)
            self.put(f"{base}/latest/kvm/SHA256SUMS", f"{img.hexdigest()}  {name}\n")
        return img

    def _append(self, url: str, text: str) -> bytes:
        parts = urlsplit(url)
        path = self.root / parts.netloc / parts.path.lstrip("/")
        old = path.read_bytes() if path.exists() else b""
        self.put(url, old + text.encode())
        return old + text.encode()


def pin_key(source: Path, dest: Path, key: SigningKey) -> Path:
    """Copy the catalogue to `dest`, trusting `key` (and only it) wherever upstream signs."""
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob("*.yaml"):  # e.g. the fixture flavor a previous demo run added
        if not (source / stale.name).exists():
            stale.unlink()
    (dest / "local-key.asc").write_bytes(key.public)
    for path in sorted(source.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        sig = data["upstream"]["signature"]
        if sig["kind"] != "none":
            sig["keys"] = ["local-key.asc"]
            sig["fingerprints"] = [key.fingerprint]
            sig.pop("per_version", None)
        (dest / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def environment(catalogue: Path, work: Path, mirror: str, **extra: str) -> dict[str, str]:
    """The environment of a doit run against a local mirror."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMI_")}
    env.update(
        KMI_CATALOGUE=str(catalogue),
        KMI_BUILD_DIR=str(work / "build"),
        KMI_CACHE_DIR=str(work / "cache"),
        KMI_MIRROR=mirror,
        KMI_HTTP_BACKOFF="0.01",
        KMI_PROGRESS="lines",
    )
    env.update(extra)
    return env
