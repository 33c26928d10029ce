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

    def fedora(self, version: str, release: str, uarch: str = "x86_64") -> Image:
        base = f"https://download.fedoraproject.org/pub/fedora/linux/releases/{version}/Cloud"
        img = self.image(
            f"{base}/{uarch}/images/Fedora-Cloud-Base-Generic-{version}-{release}.{uarch}.qcow2"
        )
        text = (
            f"# Fedora-Cloud-{version}-{release}-{uarch}-CHECKSUM\n"
            f"# {img.name}: {len(img.data)} bytes\n"
            f"SHA256 ({img.name}) = {img.hexdigest()}\n"
        )
        self.put(
            f"{img.dir}/Fedora-Cloud-{version}-{release}-{uarch}-CHECKSUM", self.key.clearsign(text)
        )
        self.releases += [
            {
                "version": version,
                "arch": uarch,
                "link": img.url,
                "variant": "Cloud",
                "subvariant": "Cloud_Base",
                "sha256": img.hexdigest(),
                "size": str(len(img.data)),
            },
            {
                "version": version,
                "arch": uarch,
                "variant": "Server",
                "subvariant": "Server",
                "link": f"{base}/../Server/{uarch}/iso/Fedora-Server-netinst-{uarch}-{version}.iso",
                "sha256": "0" * 64,
                "size": "1",
            },
        ]
        self.put("https://fedoraproject.org/releases.json", json.dumps(self.releases, indent=1))
        return img

    def centos(self, version: str, date: str, uarch: str = "x86_64") -> Image:
        folder = f"https://cloud.centos.org/centos/{version}-stream/{uarch}/images"
        img = self.image(f"{folder}/CentOS-Stream-GenericCloud-{version}-{date}.0.{uarch}.qcow2")
        self.put(f"{folder}/CentOS-Stream-GenericCloud-{version}-latest.{uarch}.qcow2", img.data)
        self._append(
            f"{folder}/CHECKSUM",
            f"# {img.name}: {len(img.data)} bytes\nSHA256 ({img.name}) = {img.hexdigest()}\n",
        )
        return img

    def almalinux(self, version: str, minor: str, date: str, uarch: str = "x86_64") -> Image:
        folder = f"https://repo.almalinux.org/almalinux/{version}/cloud/{uarch}/images"
        img = self.image(
            f"{folder}/AlmaLinux-{version}-GenericCloud-{version}.{minor}-{date}.{uarch}.qcow2"
        )
        self.put(f"{folder}/AlmaLinux-{version}-GenericCloud-latest.{uarch}.qcow2", img.data)
        lines = (
            f"{img.hexdigest()}  {img.name}\n{img.hexdigest()}  "
            f"AlmaLinux-{version}-GenericCloud-latest.{uarch}.qcow2\n"
        )
        self.put(f"{folder}/CHECKSUM", self.key.clearsign(lines))
        return img

    def rocky(self, version: str, minor: str, date: str, uarch: str = "x86_64") -> Image:
        folder = f"https://dl.rockylinux.org/pub/rocky/{version}/images/{uarch}"
        img = self.image(
            f"{folder}/Rocky-{version}-GenericCloud-Base-{version}.{minor}-{date}.0.{uarch}.qcow2"
        )
        self.put(f"{img.url}.CHECKSUM", f"SHA256 ({img.name}) = {img.hexdigest()}\n")
        return img

    def ubuntu(
        self,
        version: str,
        name: str,
        date: str,
        arch: str = "amd64",
        signer: SigningKey | None = None,
    ) -> Image:
        rel = f"server/releases/{name}/release-{date}"
        img = self.image(
            f"https://cloud-images.ubuntu.com/{rel}/ubuntu-{version}-server-cloudimg-{arch}.img"
        )
        sums = self._append(f"{img.dir}/SHA256SUMS", f"{img.hexdigest()} *{img.name}\n")
        self.put(f"{img.dir}/SHA256SUMS.gpg", (signer or self.key).detach_sign(sums))
        product = self.products.setdefault(
            f"com.ubuntu.cloud:server:{version}:{arch}",
            {"arch": arch, "release": name, "version": version, "versions": {}},
        )
        versions = product["versions"]
        assert isinstance(versions, dict)
        versions[date] = {
            "items": {
                "disk1.img": {
                    "ftype": "disk1.img",
                    "path": f"{rel}/{img.name}",
                    "sha256": img.hexdigest(),
                    "size": len(img.data),
                }
            },
            "label": "release",
        }
        doc = {
            "content_id": "com.ubuntu.cloud:released:download",
            "format": "products:1.0",
            "products": self.products,
        }
        self.put(
            "https://cloud-images.ubuntu.com/releases/streams/v1/"
            "com.ubuntu.cloud:released:download.json",
            json.dumps(doc, indent=1),
        )
        return img

    def debian(self, version: str, name: str, build: str, arch: str = "amd64") -> Image:
        folder = f"https://cloud.debian.org/images/cloud/{name}/{build}"
        img = self.image(f"{folder}/debian-{version}-genericcloud-{arch}-{build}.qcow2")
        self._append(f"{folder}/SHA512SUMS", f"{img.hexdigest('sha512')}  {img.name}\n")
        latest = f"https://cloud.debian.org/images/cloud/{name}/latest"
        self.put(f"{latest}/debian-{version}-genericcloud-{arch}.qcow2", img.data)
        return img

    def opensuse(self, version: str, build: str, uarch: str = "x86_64") -> Image:
        folder = f"https://download.opensuse.org/distribution/leap/{version}/appliances"
        img = self.image(
            f"{folder}/openSUSE-Leap-{version}-Minimal-VM.{uarch}-{version}.0-Cloud-"
            f"Build{build}.qcow2"
        )
        self.put(f"{folder}/openSUSE-Leap-{version}-Minimal-VM.{uarch}-Cloud.qcow2", img.data)
        sums = f"{img.hexdigest()}  {img.name}\n".encode()
        self.put(f"{img.url}.sha256", sums)
        self.put(f"{img.url}.sha256.asc", self.key.detach_sign(sums))
        return img

    def alpine(self, version: str, patch: str, uarch: str = "x86_64-bios") -> Image:
        folder = f"https://dl-cdn.alpinelinux.org/alpine/v{version}/releases/cloud"
        img = self.image(f"{folder}/nocloud_alpine-{version}.{patch}-{uarch}-cloudinit-r0.qcow2")
        self.put(f"{img.url}.sha512", f"{img.hexdigest('sha512')}  {img.name}\n")
        self.put(f"{img.url}.asc", self.key.detach_sign(img.data))
        return img

    def archlinux(self, build: str, signer: SigningKey | None = None) -> Image:
        folder = f"https://geo.mirror.pkgbuild.com/images/v{build}"
        img = self.image(f"{folder}/Arch-Linux-x86_64-cloudimg-{build}.qcow2")
        self.put(f"{img.url}.SHA256", f"{img.hexdigest()}  {img.name}\n")
        self.put(f"{img.url}.sig", (signer or self.key).detach_sign(img.data, armor=False))
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
