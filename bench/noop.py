"""Benchmark: a no-op `doit` over the whole catalogue with everything up to date, beside
bare doit running the same number of trivial tasks, in one run.

    .venv/bin/python bench/noop.py [--runs N]

It builds every target of the catalogue against a local mirror (as the demo does), then
times `doit checksum` (86 tasks, all up to date) and `doit list`, and the same commands on
a dodo.py of trivial tasks shaped alike (same names, task_dep pairs, targets that exist,
`uptodate: [True]`). With strace installed it also counts the large files the no-op run
opens (goal: none; up-to-date checks only stat them). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kmi.demo.layouts import populate_all
from kmi.demo.server import MirrorServer
from kmi.demo.upstreams import SigningKey, Upstreams, environment, pin_key

REPO = Path(__file__).resolve().parent.parent

TRIVIAL_DODO = '''\
from pathlib import Path

DOIT_CONFIG = {{"dep_file": "doit-state.json", "backend": "json", "verbosity": 2}}
NAMES = {names!r}
OUT = Path(__file__).parent / "out"


def noop():
    return None


def task_download():
    """trivial"""
    for name in NAMES:
        yield {{"name": name, "actions": [noop], "uptodate": [True],
                "targets": [str(OUT / name / "download.json")]}}


def task_checksum():
    """trivial"""
    for name in NAMES:
        yield {{"name": name, "actions": [noop], "uptodate": [True],
                "task_dep": [f"download:{{name}}"],
                "targets": [str(OUT / name / "checksum.json")]}}
'''


Command = tuple[list[str], dict[str, str], Path]


def once(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    if "checksum" in argv and re.search(r"^\.  ", done.stdout, re.MULTILINE):
        raise SystemExit(f"not a no-op run:\n{done.stdout}")
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


def build_everything(work: Path) -> tuple[dict[str, str], list[str], MirrorServer, SigningKey]:
    key = SigningKey(work / "gnupg", "kmi bench <bench@kmi.invalid>")
    images = populate_all(Upstreams(work / "mirror", key))
    catalogue = pin_key(REPO / "distros", work / "distros", key)
    server = MirrorServer(work / "mirror").start()
    env = environment(catalogue, work, server.url)
    doit = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py")]
    for args in (["discover"], ["checksum"]):
        done = subprocess.run([*doit, *args], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"building failed:\n{done.stdout}{done.stderr}")
    return env, sorted(images), server, key


def trivial_project(work: Path, names: list[str]) -> Path:
    bare = work / "bare"
    for name in names:
        for stage in ("download", "checksum"):
            path = bare / "out" / name / f"{stage}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
    (bare / "dodo.py").write_text(TRIVIAL_DODO.format(names=names))
    return bare


def row(label: str, times: list[float]) -> str:
    return (
        f"| {label} | {statistics.median(times) * 1000:.0f} | {min(times) * 1000:.0f} | "
        f"{max(times) * 1000:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory(prefix="kmi-bench-") as tmp:
        work = Path(tmp)
        env, names, server, key = build_everything(work)
        try:
            bare = trivial_project(work, names)
            bare_env = {k: v for k, v in os.environ.items() if not k.startswith("KMI_")}
            kmi = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py")]
            plain = [sys.executable, "-m", "doit", "-f", str(bare / "dodo.py")]
            tasks = 2 * len(names)
            # bytecode as an installed package has it, even under PYTHONDONTWRITEBYTECODE
            subprocess.run(
                [sys.executable, "-m", "compileall", "-q", str(REPO / "src"), str(bare)],
                check=True,
            )
            labels = [
                f"kmi: `doit checksum`, {tasks} tasks up to date",
                f"bare doit: {tasks} trivial tasks up to date",
                "kmi: `doit list`",
                "bare doit: `doit list`",
            ]
            commands: list[Command] = [
                ([*kmi, "checksum"], env, REPO),
                ([*plain, "checksum"], bare_env, bare),
                ([*kmi, "list"], env, REPO),
                ([*plain, "list"], bare_env, bare),
            ]
            times = timed(commands, runs)
            results = [row(label, t) for label, t in zip(labels, times, strict=True)]
            opened = large_files_opened([*kmi, "checksum"], env, REPO, work)
        finally:
            server.stop()
            key.close()
    print(
        f"{len(names)} targets, {runs} runs each, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}\n"
    )
    print("| command | median ms | min ms | max ms |\n| --- | ---: | ---: | ---: |")
    print("\n".join(results))
    print(f"\nLarge files (cached images) opened by the no-op kmi run: {opened}")


if __name__ == "__main__":
    main()
