"""The doit glue, one module per phase: targets (discover to test), images (manifest, bake,
publish, docs), status and ci-matrix, and doit's configuration. dodo.py imports these."""

from kmi.tasks.ci import task_ci_matrix
from kmi.tasks.config import doit_config
from kmi.tasks.images import task_bake, task_docs, task_manifest, task_publish
from kmi.tasks.status import task_status
from kmi.tasks.targets import (
    task_build,
    task_checksum,
    task_discover,
    task_download,
    task_sparsify,
    task_sysprep,
    task_test,
)

__all__ = [
    "doit_config",
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
