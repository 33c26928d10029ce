"""Every artifact path, in one place: doit matches targets and deps by exact string."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kmi.settings import Settings


@dataclass(frozen=True)
class Paths:
    """Paths under the build folder (per target) and the cache folder (by content)."""

    build: Path
    cache: Path

    @classmethod
    def of(cls, settings: Settings) -> Paths:
        return cls(settings.build_dir, settings.cache_dir)

    def target_dir(self, target: str) -> Path:
        return self.build / target

    def receipt(self, target: str, stage: str) -> Path:
        """The stage's receipt: its key and what it made, written last."""
        return self.build / target / f"{stage}.json"

    def log(self, target: str, stage: str) -> Path:
        return self.build / target / "logs" / f"{stage}.log"

    def blob(self, digest: str) -> Path:
        """Verified upstream bytes, exactly as served, named by their digest."""
        algorithm, hexdigest = digest.split(":", 1)
        return self.cache / "downloads" / algorithm / hexdigest

    def partial(self, digest: str) -> Path:
        """An unverified, possibly cut transfer; resumed by the next download."""
        algorithm, hexdigest = digest.split(":", 1)
        return self.cache / "partial" / algorithm / f"{hexdigest}.part"

    def image(self, digest: str, compression: str) -> Path:
        """The upstream disk image with transport compression removed."""
        if compression == "none":
            return self.blob(digest)
        algorithm, hexdigest = digest.split(":", 1)
        return self.cache / "images" / algorithm / hexdigest

    def sysprep_image(self, target: str) -> Path:
        """The customized image, before sparsifying."""
        return self.build / target / "sysprep.qcow2"

    def disk(self, target: str) -> Path:
        """The final qcow2: sparsified, compressed, checked."""
        return self.build / target / "disk.qcow2"

    def sbom(self, target: str) -> Path:
        """The final disk's installed packages, SPDX 2.3 JSON."""
        return self.build / target / "sbom.spdx.json"

    def layout(self, target: str) -> Path:
        """The per-arch containerdisk, an OCI image layout."""
        return self.build / target / "oci"

    def bake_context(self, target: str) -> Path:
        """The buildx engine's build context: only a hard link to the final disk."""
        return self.build / target / "bake"

    def image_dir(self, image: str) -> Path:
        """Outputs of one multi-arch image (targets' folders end in an arch; these cannot)."""
        return self.build / "images" / image

    def image_layout(self, image: str) -> Path:
        """The image index and every blob of the image, an OCI image layout."""
        return self.image_dir(image) / "oci"

    def image_receipt(self, image: str, stage: str) -> Path:
        return self.image_dir(image) / f"{stage}.json"

    def tool_versions(self) -> Path:
        return self.cache / "tool-versions.json"

    def accel(self) -> Path:
        return self.cache / "accel.json"

    def doit_db(self) -> Path:
        return self.cache / "doit-state.json"

    def results(self) -> Path:
        return self.build / "results.json"
