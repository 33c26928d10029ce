"""kmi: KubeVirt machine images as a doit task graph. `doit list` shows the task families."""

from kmi.tasks import doit_config, task_checksum, task_discover, task_download

DOIT_CONFIG = doit_config()

__all__ = ["DOIT_CONFIG", "task_checksum", "task_discover", "task_download"]
