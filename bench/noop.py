"""Benchmark: the no-op of every task family at scale, beside bare doit running the same
number of trivial tasks of the same shape, in one run.

    .venv/bin/python bench/noop.py [--copies N] [--runs R]

The catalogue is scaled to N renamed copies of each flavor (N=1: the catalogue as it is;
N=10: about 440 targets). Every target is discovered and downloaded from a local mirror
(as the demo does; the copies pin the same upstream files), then restored the way a build
folder from another machine is: receipts holding the keys kmi computes, and small stand-ins
for the outputs, so no libguestfs run is needed and every family is up to date. Then each
family's no-op (`doit download` ... `doit manifest`, the whole pipeline, `doit list`,
`doit list --all`) is timed beside a dodo.py of trivial tasks with the same names, the same
task_dep edges, existing targets and `uptodate: [True]`. With strace installed it also
counts the large files the no-op opens (goal: none; up-to-date checks only stat them).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from kmi.demo.layouts import populate_all
from kmi.demo.server import MirrorServer
from kmi.demo.upstreams import SigningKey, Upstreams, environment, pin_key

REPO = Path(__file__).resolve().parent.parent
FAMILIES = ("download", "checksum", "sysprep", "sparsify", "build", "test")

TRIVIAL_DODO = '''\
from pathlib import Path

DOIT_CONFIG = {{"dep_file": "doit-state.json", "backend": "json", "verbosity": 2,
               "default_tasks": []}}
TARGETS = {targets!r}
IMAGES = {images!r}
NEEDS = {{"checksum": "download", "sysprep": "checksum", "sparsify": "sysprep",
          "build": "sparsify", "test": "sparsify"}}
OUT = Path(__file__).parent / "out"


def noop():
    return None


def family(stage):
    def make():
        """trivial"""
        for name in TARGETS:
            task = {{"name": name, "actions": [noop], "uptodate": [True],
                     "targets": [str(OUT / name / f"{{stage}}.json")]}}
            if stage in NEEDS:
                task["task_dep"] = [f"{{NEEDS[stage]}}:{{name}}"]
            yield task
    return make


for _stage in ("download", "checksum", "sysprep", "sparsify", "build", "test"):
    globals()[f"task_{{_stage}}"] = family(_stage)


def task_manifest():
    """trivial"""
    for image, names in IMAGES.items():
        yield {{"name": image, "actions": [noop], "uptodate": [True],
                "targets": [str(OUT / image / "manifest.json")],
                "task_dep": [f"build:{{n}}" for n in names]}}
'''

# Run inside the kmi project (its settings in the environment): receipts for every stage
# after checksum, written with the keys kmi's own plan computes, and small stand-ins for
# the outputs (the no-op only stats them).
RESTORE = """
from kmi import receipts
from kmi.tasks.common import CTX
plan, paths = CTX.plan, CTX.paths
for name, target in CTX.targets.items():
    keys = plan.keys(target)
    for path in (paths.sysprep_image(name), paths.disk(name), paths.layout(name) / "index.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"stand-in")
    write = lambda stage, made: receipts.write(paths.receipt(name, stage), made)
    write("sysprep", receipts.Sysprep(key=keys.sysprep, target=name, size=8))
    write("sparsify", receipts.Sparsify(key=keys.sparsify, target=name, sysprep_size=8,
                                        final_size=8))
    write("build", receipts.Build(key=keys.build, target=name, layout="", manifest="",
                                  manifest_size=0, config="", layer="", layer_size=0,
                                  diff_id="", compression="", disk_size=8))
    write("test", receipts.Test(key=keys.test, target=name, arch=str(target.arch), accel="tcg",
                                status="passed", seconds=1.0))
for image, targets in CTX.images.items():
    planned = plan.index(image, targets)
    paths.image_layout(image).mkdir(parents=True, exist_ok=True)
    receipts.write(paths.image_receipt(image, "manifest"), receipts.Manifest(
        key=planned.key, image=image, digest="", arches=[], annotations={}))
"""

Command = tuple[list[str], dict[str, str], Path]


def once(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    if re.search(r"^\.  ", done.stdout, re.MULTILINE):
        raise SystemExit(f"not a no-op run: {' '.join(argv)}\n{done.stdout}")
    return seconds


def timed(commands: list[Command], runs: int) -> list[list[float]]:
    """Run the commands in turn, `runs` rounds, so that drift hits them all alike."""
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for i, (argv, env, cwd) in enumerate(commands):
            times[i].append(once(argv, env, cwd))
    return times


def large_files_opened(argv: list[str], env: dict[str, str], cwd: Path, work: Path) -> str:
    if shutil.which("strace") is None:
        return "not measured (install strace)"
    trace = work / "strace.log"
    subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=open,openat", "-o", str(trace), *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        check=True,
    )
    cache = str(work / "cache")
    opened = {
        line.split('"')[1]
        for line in trace.read_text().splitlines()
        if '"' in line and line.split('"')[1].startswith((f"{cache}/downloads", f"{cache}/images"))
    }
    return str(len(opened))


def scale(catalogue: Path, copies: int) -> None:
    """N-1 renamed copies of every flavor (`<name>c<i>`), pinning what the original pins."""
    from kmi import lock as lockfile
    from kmi.catalogue import load_catalogue
    from kmi.maintained import maintained_targets, source_key

    originals = sorted(p for p in catalogue.glob("*.yaml"))
    for path in originals:
        data = yaml.safe_load(path.read_text())
        for i in range(1, copies):
            data["name"] = f"{path.stem}c{i}"
            (catalogue / f"{path.stem}c{i}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    flavors = {f.name: f for f in load_catalogue(catalogue).flavors}
    with lockfile.updating(catalogue / "lock.json") as lock:
        for path in originals:
            for i in range(1, copies):
                copy = flavors[f"{path.stem}c{i}"]
                if path.stem in lock.versions:
                    lock.versions[copy.name] = lock.versions[path.stem]
                for target in maintained_targets(copy, lock):
                    original = target.name.replace(copy.name, path.stem, 1)
                    entry = lock.targets[original]
                    lock.targets[target.name] = dataclasses.replace(
                        entry, flavor=copy.name, source=source_key(target)
                    )


def build_everything(
    work: Path, copies: int
) -> tuple[dict[str, str], MirrorServer, SigningKey, dict[str, list[str]]]:
    key = SigningKey(work / "gnupg", "kmi bench <bench@kmi.invalid>")
    populate_all(Upstreams(work / "mirror", key))
    catalogue = pin_key(REPO / "distros", work / "distros", key)
    server = MirrorServer(work / "mirror").start()
    env = environment(catalogue, work, server.url, KMI_PROGRESS="off")
    doit = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py")]

    def run(*args: str, code: str = "") -> str:
        argv = [sys.executable, "-c", code] if code else [*doit, *args]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            raise SystemExit(f"building failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    run("discover")
    scale(catalogue, copies)
    run("checksum")
    run(code=RESTORE)
    listing = run(
        code="from kmi.tasks.common import CTX\n"
        "for i, ts in CTX.images.items(): print(i, *(t.name for t in ts))"
    )
    images = {line.split()[0]: line.split()[1:] for line in listing.splitlines()}
    return env, server, key, images


def trivial_project(work: Path, images: dict[str, list[str]]) -> Path:
    bare = work / "bare"
    targets = [name for names in images.values() for name in names]
    for name in [*targets, *images]:
        for stage in (*FAMILIES, "manifest"):
            path = bare / "out" / name / f"{stage}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
    (bare / "dodo.py").write_text(TRIVIAL_DODO.format(targets=targets, images=images))
    return bare


def row(label: str, kmi: list[float], bare: list[float]) -> str:
    k, b = statistics.median(kmi), statistics.median(bare)
    return f"| {label} | {k * 1000:.0f} | {b * 1000:.0f} | {k / b:.2f}x |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=1, help="copies of each flavor (1: as is)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kmi-bench-") as tmp:
        work = Path(tmp)
        env, server, key, images = build_everything(work, args.copies)
        try:
            bare = trivial_project(work, images)
            bare_env = {k: v for k, v in os.environ.items() if not k.startswith("KMI_")}
            kmi = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py")]
            plain = [sys.executable, "-m", "doit", "-f", str(bare / "dodo.py")]
            # bytecode as an installed package has it, even under PYTHONDONTWRITEBYTECODE
            subprocess.run(
                [sys.executable, "-m", "compileall", "-q", str(REPO / "src"), str(bare)],
                check=True,
            )
            cases = [[family] for family in (*FAMILIES, "manifest")]
            cases += [["manifest", "test"], ["list"], ["list", "--all"]]
            commands: list[Command] = []
            for case in cases:
                commands += [([*kmi, *case], env, REPO), ([*plain, *case], bare_env, bare)]
            times = timed(commands, args.runs)
            opened = large_files_opened([*kmi, "manifest", "test"], env, REPO, work)
        finally:
            server.stop()
            key.close()
    targets = sum(len(names) for names in images.values())
    print(
        f"{args.copies} cop{'y' if args.copies == 1 else 'ies'} of each flavor: {targets} "
        f"targets, {len(images)} images; median of {args.runs} runs; {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}\n"
    )
    print("| no-op | kmi ms | bare doit ms | kmi / bare |\n| --- | ---: | ---: | ---: |")
    for i, case in enumerate(cases):
        tasks = "every family" if case == ["manifest", "test"] else " ".join(case)
        print(row(f"`doit {' '.join(case)}`" if tasks != "every family" else tasks,
                  times[2 * i], times[2 * i + 1]))  # fmt: skip
    print(f"\nLarge files (cached images) opened by the whole no-op: {opened}")


if __name__ == "__main__":
    main()
