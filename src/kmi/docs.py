"""docs:I — what users read, written from the catalogue and the lock, never by hand: a
README per image (what it is, tier, arches, tags, upstream source and digest, pull date,
licence, default user, and "try me" manifests), and the release chart of the catalogue.

Pure functions of their inputs: the same catalogue and lock give the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yaml

from kmi.catalogue import Arch, Catalogue, Flavor, Target
from kmi.lock import LockEntry
from kmi.stages.containerdisk import preference_of

TIER_ORDER = ("stable", "proposed", "preview", "planned")
TIER_MEANING = {
    "stable": "stable: boot-tested on every build, kept current",
    "proposed": "proposed: a candidate for stable, boot-tested on every build",
    "preview": "preview: published as soon as it builds, possibly before its boot test",
    "planned": "planned: in the catalogue, not published yet",
}
BOOT_TESTED = "passed before every publish (cloud-init, qemu-guest-agent, SSH) on each arch"
UNTESTED = "run on each build; this tier publishes without waiting for it"
# What a DataVolume requests: the image's virtual size is not known from the catalogue.
DATAVOLUME_SIZE = "20Gi"
KEY_PLACEHOLDER = "ssh-ed25519 AAAA... you@example.org"
# cosign's options for kmi's signatures: the public key; no transparency-log entry to check
KEY = "--insecure-ignore-tlog --key kmi.pub"
SECRET = "my-ssh-key"  # the Secret holding the user's public key, in the "try me" manifests


@dataclass(frozen=True)
class ImageDoc:
    """Everything one image's README says."""

    image: str  # <flavor>-<version>
    flavor: Flavor
    targets: tuple[Target, ...]
    entries: Mapping[str, LockEntry]  # target name -> pinned entry (missing: not pinned)
    repository: str  # <host>/<path>/<flavor>, or <registry>/<flavor> when none is set
    tags: tuple[str, ...]  # moving tags, e.g. ("42", "latest")
    immutable: str  # <version>-<release>, or "" before the first pin
    gated: bool  # published only after its boot test passed
    required: frozenset[str] = frozenset()  # the criteria its tier requires (less waivers)

    @property
    def version(self) -> str:
        return self.targets[0].version.version

    def reference(self, tag: str | None = None) -> str:
        return f"{self.repository}:{tag or self.tags[0]}"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (cloud-init user data) as `|` blocks, the way people write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(doc: object) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def virtual_machine(doc: ImageDoc, target: Target) -> str:
    """A KubeVirt VirtualMachine booting the containerdisk, with cloud-init for the user."""
    cd = doc.flavor.containerdisk
    spec: dict[str, object] = {
        "runStrategy": "Always",
        "instancetype": {"name": cd.instancetype},
    }
    preference = preference_of(target)
    if preference:
        spec["preference"] = {"name": preference}
    user_data = (
        "#cloud-config\n"
        f"# the default user is {cd.user}; its SSH key comes from the Secret {SECRET}\n"
        "# through qemu-guest-agent (accessCredentials), and can change while it runs\n"
    )
    access = {
        "sshPublicKey": {
            "source": {"secret": {"secretName": SECRET}},
            "propagationMethod": {"qemuGuestAgent": {"users": [cd.user]}},
        }
    }
    spec["template"] = {
        "spec": {
            "architecture": str(target.arch),
            "domain": {"devices": {}},
            "accessCredentials": [access],
            "volumes": [
                {"name": "containerdisk", "containerDisk": {"image": doc.reference()}},
                {"name": "cloudinit", "cloudInitNoCloud": {"userData": user_data}},
            ],
        }
    }
    return _dump(
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": doc.image.replace(".", "-")},
            "spec": spec,
        }
    )


def data_volume(doc: ImageDoc, target: Target) -> str:
    """A CDI DataVolume importing the arch's disk from the registry into a PVC."""
    return _dump(
        {
            "apiVersion": "cdi.kubevirt.io/v1beta1",
            "kind": "DataVolume",
            "metadata": {"name": target.name.replace(".", "-")},
            "spec": {
                "source": {
                    "registry": {
                        "url": f"docker://{doc.reference()}",
                        "platform": {"architecture": str(target.arch)},
                    }
                },
                "storage": {"resources": {"requests": {"storage": DATAVOLUME_SIZE}}},
            },
        }
    )


def virtctl_line(doc: ImageDoc, target: Target) -> str:
    cd = doc.flavor.containerdisk
    words = [
        "virtctl create vm",
        f"--name {doc.image.replace('.', '-')}",
        f"--instancetype {cd.instancetype}",
    ]
    preference = preference_of(target)
    if preference:
        words.append(f"--preference {preference}")
    words += [
        f"--volume-containerdisk src:{doc.reference()}",
        f"--user {cd.user}",
        '--ssh-key "$(cat ~/.ssh/id_ed25519.pub)"',
    ]
    return " \\\n    ".join(words) + " \\\n  | kubectl create -f -"


SIGNERS = {"unsigned": "unsigned", "image": "the image's own signature, checked on download"}


def _source_rows(doc: ImageDoc) -> list[str]:
    rows = [
        "| arch | upstream file | digest | release | pulled | signed by |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for target in doc.targets:
        entry = doc.entries.get(target.name)
        if entry is None:
            hint = f"not pinned yet (`doit discover:{doc.flavor.name}`)"
            rows.append(f"| {target.arch} | {hint} | | | | |")
            continue
        signed = SIGNERS.get(entry.signed_by, f"`{entry.signed_by}`")
        rows.append(
            f"| {target.arch} | <{entry.url}> | `{entry.digest}` | {entry.release} "
            f"| {entry.found[:10]} | {signed} |"
        )
    return rows


def _verification(flavor: Flavor) -> str:
    sig = flavor.upstream.signature
    done = (
        "the disk was customized (qemu-guest-agent, cloud-init), cleaned of host identity and "
        "sparsified."
    )
    if sig.kind == "none":
        return (
            f"**Unsigned upstream** ({sig.why}): every upstream file below was checked against "
            f"the checksum upstream publishes, and trust rests on HTTPS and that checksum; {done}"
        )
    signed = "the image itself" if sig.of == "image" else "the checksum file"
    return (
        "Every upstream file below was verified against its published checksum before use, "
        f"and {signed} against its OpenPGP signature by the pinned key named below; {done}"
    )


def image_readme(doc: ImageDoc) -> str:
    """The README of one image, as Markdown."""
    flavor = doc.flavor
    arches = ", ".join(str(t.arch) for t in doc.targets)
    tags = [*doc.tags, *([doc.immutable] if doc.immutable else [])]
    first = doc.targets[0]
    lines = [
        f"# {doc.image}",
        "",
        "<!-- written by `doit docs` from the catalogue and the lock; do not edit -->",
        "",
        flavor.description,
        "",
        "| | |",
        "| --- | --- |",
        f"| image | `{doc.repository}` |",
        f"| tags | {', '.join(f'`{t}`' for t in tags)} |",
        f"| arches | {arches} |",
        f"| tier | {TIER_MEANING[flavor.tier]} |",
        f"| boot test | {BOOT_TESTED if doc.gated else UNTESTED} |",
        f"| default user | `{flavor.containerdisk.user}` (cloud-init) |",
        f"| licence | {flavor.license} |",
        f"| upstream | <{flavor.homepage}> |",
    ]
    if flavor.documentation:
        lines.append(f"| documentation | <{flavor.documentation}> |")
    lines += [
        f"| catalogue | `{flavor.source.name}` |",
        "",
        _verification(flavor),
        "",
        *_source_rows(doc),
        "",
        *_criteria_rows(doc),
        "## Try me",
        "",
        "Your SSH public key as a Secret, which the guest agent puts in place:",
        "",
        "```sh",
        f"kubectl create secret generic {SECRET} --from-file=key=$HOME/.ssh/id_ed25519.pub",
        "```",
        "",
        f"A VirtualMachine booting the containerdisk ({first.arch}):",
        "",
        "```yaml",
        virtual_machine(doc, first).rstrip(),
        "```",
        "",
        "The same with virtctl:",
        "",
        "```sh",
        virtctl_line(doc, first),
        "```",
        "",
        "A DataVolume importing the disk into a PersistentVolumeClaim with CDI, per arch "
        f"(the request must exceed the disk's virtual size; {DATAVOLUME_SIZE} is a guess):",
        "",
    ]
    for target in doc.targets:
        lines += ["```yaml", data_volume(doc, target).rstrip(), "```", ""]
    signed = (
        "Every build is signed (its tier requires it); check"
        if "signature" in doc.required
        else 'Where the publisher signs (kmi\'s README, "Signed images"), check'
    )
    arch = str(first.arch)
    select = f'.manifests[] | select(.platform.architecture == "{arch}") | .digest'
    lines += [
        f"{signed} the signature with the publisher's public key, and each arch's SBOM and "
        f"provenance, attached to that arch's image ({arch} here):",
        "",
        "```sh",
        f"cosign verify {KEY} {doc.reference()}",
        f"digest=$(skopeo inspect --raw docker://{doc.reference()} | jq -r '{select}')",
        f"cosign verify-attestation {KEY} --type spdxjson {doc.repository}@$digest",
        f"cosign verify-attestation {KEY} --type slsaprovenance1 {doc.repository}@$digest",
        "```",
        "",
    ]
    return "\n".join(lines)


def _criteria_rows(doc: ImageDoc) -> list[str]:
    """The tier's criteria (kmi.criteria): which this image had to pass to be published."""
    from kmi.criteria import ALL, UNCHECKED

    waived = doc.flavor.test.waive
    rows = [
        "## Criteria",
        "",
        f"What the `{doc.flavor.tier}` tier requires of every build before it is published "
        "(kmi's README, \"Support tiers\"); each build's results are in its run's "
        "`build/results.json` (`tests`, `criteria`).",
        "",
        "| criterion | for this image |",
        "| --- | --- |",
    ]
    for name in ALL:
        if name in waived:
            said = f"waived: {waived[name]}"
        elif name in doc.required:
            said = "required: passed by every published build (publish refuses otherwise)"
        else:
            said = "checked and recorded, not required by this tier"
        rows.append(f"| {name} | {said} |")
    rows += ["", "Not checked by any machine: " + "; ".join(UNCHECKED) + ".", ""]
    return rows


def release_chart(catalogue: Catalogue, targets: Sequence[Target]) -> str:
    """flavor x tier x arch for the whole catalogue, as a Markdown table."""
    arches = [str(a) for a in Arch]
    by_flavor: dict[str, list[Target]] = {}
    for target in targets:
        by_flavor.setdefault(target.flavor.name, []).append(target)
    lines = [
        "# Release chart",
        "",
        "<!-- written by `doit docs` from the catalogue; do not edit -->",
        "",
        "Versions maintained per flavor and arch; see each image's README for tags and sources.",
        "",
        f"| flavor | tier | {' | '.join(arches)} |",
        f"| --- | --- | {' | '.join('---' for _ in arches)} |",
    ]
    flavors = sorted(catalogue.flavors, key=lambda f: (TIER_ORDER.index(f.tier), f.name))
    for flavor in flavors:
        cells = []
        mine = by_flavor.get(flavor.name, [])
        for arch in arches:
            versions = [t.version.version for t in mine if str(t.arch) == arch]
            cells.append(", ".join(f"[{v}]({flavor.name}-{v}.md)" for v in versions) or "—")
        lines.append(f"| {flavor.name} | {flavor.tier} | {' | '.join(cells)} |")
    lines += ["", *(f"- {TIER_MEANING[t]}" for t in TIER_ORDER), ""]
    return "\n".join(lines)
