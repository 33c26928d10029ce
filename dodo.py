"""kmi: KubeVirt machine images as a doit task graph. `doit list` shows the task families."""

from kmi.tasks import (
    doit_config,
    task_bake,
    task_build,
    task_checksum,
    task_ci_matrix,
    task_discover,
    task_docs,
    task_download,
    task_manifest,
    task_publish,
    task_sparsify,
    task_status,
    task_sysprep,
    task_test,
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
    "task_publish",
    "task_sparsify",
    "task_status",
    "task_sysprep",
    "task_test",
]
