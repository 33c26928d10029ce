"""kmi: KubeVirt machine images as a doit task graph. `doit list` shows the task families."""

from kmi.tasks.ci import task_ci_matrix
from kmi.tasks.config import doit_config
from kmi.tasks.images import task_bake, task_docs, task_manifest, task_prune, task_publish
from kmi.tasks.status import task_status
from kmi.tasks.targets import (
    task_build,
    task_checksum,
    task_discover,
    task_download,
    task_push,
    task_sbom,
    task_sparsify,
    task_sysprep,
    task_test,
    task_verify,
)

DOIT_CONFIG = doit_config()

__all__ = [
    "DOIT_CONFIG",
    "task_bake",
    "task_build",
    "task_checksum",
    "task_ci_matrix",
    "task_discover",
    "task_docs",
    "task_download",
    "task_manifest",
    "task_prune",
    "task_publish",
    "task_push",
    "task_sbom",
    "task_sparsify",
    "task_status",
    "task_sysprep",
    "task_test",
    "task_verify",
]
