"""sparsify:T — the final disk.qcow2: unused space zeroed, compressed, checked, and proven
to hold exactly what the zeroed image holds."""

from __future__ import annotations

import os
from pathlib import Path

from kmi import tools
from kmi.keys import stage_key
from kmi.stages import space

STAGE_VERSION = "1"
TOOLS = (tools.QEMU_IMG, tools.VIRT_SPARSIFY)


def sparsify_key(input_key: str, versions: dict[str, str]) -> str:
    return stage_key("sparsify", {}, {**versions, "kmi-sparsify": STAGE_VERSION}, [input_key])


def sparsify(
    source: Path, output: Path, log: Path, env: dict[str, str], timeout: float | None = None
) -> dict[str, int]:
    """Zero unused blocks in a copy of `source` (virt-sparsify --in-place, stopped past
    `timeout` seconds), write it compressed (qemu-img convert -c), then `qemu-img check`
    the result and `qemu-img compare` it with the zeroed copy before it takes its place."""
    work = output.with_name(f".{output.name}.work")
    done = output.with_name(f".{output.name}.tmp")
    # a copy of the input (sparsified in place, so it does not grow), and the compressed
    # result, which is smaller than that copy
    space.require(output.parent, 2 * space.allocated(source), f"sparsify of {source}")
    log.unlink(missing_ok=True)
    try:
        qcow2, here = ["-f", "qcow2"], output.parent  # where a full disk is watched for
        convert = ["convert", *qcow2, "-O", "qcow2", str(source), str(work)]
        tools.run(tools.QEMU_IMG, convert, log=log, space=here)
        tools.run(
            tools.VIRT_SPARSIFY,
            ["--in-place", "--format", "qcow2", str(work)],
            env=env,
            log=log,
            timeout=timeout,
            space=here,
        )
        compress = ["convert", *qcow2, "-c", "-O", "qcow2", str(work), str(done)]
        tools.run(tools.QEMU_IMG, compress, log=log, space=here)
        tools.run(tools.QEMU_IMG, ["check", *qcow2, str(done)], log=log)
        tools.run(
            tools.QEMU_IMG,
            ["compare", "-q", "-f", "qcow2", "-F", "qcow2", str(work), str(done)],
            log=log,
        )
        os.replace(done, output)
    finally:
        work.unlink(missing_ok=True)
        done.unlink(missing_ok=True)
    return {"sysprep_size": source.stat().st_size, "final_size": output.stat().st_size}
