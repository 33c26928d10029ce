"""The CI matrix from the catalogue, and the ready GitHub workflow that uses it, validated
offline against the GitHub workflow schema bundled with check-jsonschema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from kmi.catalogue import load_catalogue, targets_of
from tests.conftest import REPO, Project

WORKFLOW = REPO / ".github" / "workflows" / "kmi.yml"


def test_the_workflow_is_valid_for_github() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflow_runs_task_families_that_exist(project: Project) -> None:
    families = {line.split()[0] for line in project.doit("list").out.splitlines()}
    workflow = yaml.safe_load(WORKFLOW.read_text())
    runs = [
        step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step
    ]
    called = {
        word.split(":")[0]
        for run in runs
        for command in re.findall(r"\.venv/bin/doit ([^\n]+)", run)
        for word in re.sub(r"\$\{\{.*?\}\}", "T", command).split()
        if not word.startswith(("$", "-"))  # a shell variable or an option: not a task
    }
    expected = {"discover", "docs", "ci-matrix", "build", "test", "sbom", "verify", "push"}
    assert called == {*expected, "publish", "prune"}
    assert called <= families
    build = workflow["jobs"]["build"]
    assert build["runs-on"] == "${{ matrix.runner }}"
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.discover.outputs.matrix) }}"


def test_the_workflow_records_discovery_and_survives_one_flavor_down() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    steps = {step.get("id", step.get("name")): step for step in jobs["discover"]["steps"]}
    discover = steps["discover"]
    assert discover["run"] == ".venv/bin/doit discover"
    assert discover["continue-on-error"] is True
    recording = discover["env"]["KMI_RECORD"]
    kept = steps["Keep what upstream served tonight"]
    assert kept["with"]["path"].rstrip("/") == recording
    assert jobs["discover"]["outputs"]["discovered"] == "${{ steps.discover.outcome }}"
    last = jobs["publish"]["steps"][-1]
    assert last["if"] == (
        "${{ needs.discover.outputs.discovered == 'failure' || needs.build.result == 'failure' }}"
    )


def test_the_matrix_has_one_job_per_target_on_a_runner_of_its_arch(project: Project) -> None:
    done = project.doit("ci-matrix")
    assert done.code == 0, done.out
    written = json.loads((project.work / "build" / "ci-matrix.json").read_text())
    assert json.loads(_printed(done.out)) == written  # printed as well
    catalogue = load_catalogue(project.catalogue)
    every = [t for f in catalogue.flavors for t in targets_of(f)]
    expected = [t.name for t in every if str(t.arch) != "s390x"]
    assert [job["target"] for job in written["include"]] == expected
    runners = {job["arch"]: job["runner"] for job in written["include"]}
    assert runners == {"amd64": "ubuntu-24.04", "arm64": "ubuntu-24.04-arm"}
    fedora = next(j for j in written["include"] if j["target"] == "fedora-44-arm64")
    assert fedora == {
        "target": "fedora-44-arm64",
        "image": "fedora-44",
        "flavor": "fedora",
        "version": "44",
        "arch": "arm64",
        "runner": "ubuntu-24.04-arm",
    }
    assert "ci-matrix: no runner for s390x, left out: " in done.out
    assert "(set KMI_CI_RUNNERS=s390x=<runner label>)" in done.out


def test_runner_labels_come_from_the_environment(project: Project) -> None:
    done = project.doit("ci-matrix", KMI_CI_RUNNERS="arm64=my-arm,s390x=my-z")
    assert done.code == 0, done.out
    jobs = json.loads((project.work / "build" / "ci-matrix.json").read_text())["include"]
    assert {j["arch"]: j["runner"] for j in jobs} == {
        "amd64": "ubuntu-24.04",
        "arm64": "my-arm",
        "s390x": "my-z",
    }
    assert "no runner" not in done.out
    bad = project.doit("ci-matrix", KMI_CI_RUNNERS="riscv64=x")
    assert bad.code != 0
    assert "KMI_CI_RUNNERS='riscv64=x': expected arch=label pairs" in bad.out
    assert "Traceback" not in bad.out


def _printed(out: str) -> str:
    """The matrix line of a ci-matrix run's output."""
    return next(line for line in out.splitlines() if line.startswith('{"include":'))


def test_only_stale_targets_and_a_bad_filter(project: Project) -> None:
    stale = project.doit("ci-matrix", "only=stale")
    assert stale.code == 0, stale.out
    every = project.doit("ci-matrix")
    assert _printed(stale.out) == _printed(every.out)  # nothing is built here
    bad = project.doit("ci-matrix", "only=fresh")
    assert bad.code == 1
    assert "FAILED ci-matrix: ci-matrix only='fresh': expected only=stale" in bad.out


def test_the_night_asks_the_registry_and_moves_only_receipts() -> None:
    """Only stale targets get jobs (all on request); a build job pushes its image by digest
    and hands over its receipts; the publish job indexes what is in the registry."""
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    matrix = next(s for s in jobs["discover"]["steps"] if s.get("id") == "matrix")
    assert ".venv/bin/doit ci-matrix $only" in matrix["run"] and "only=only=stale" in matrix["run"]
    assert matrix["env"]["REBUILD"] == "${{ inputs.rebuild }}"
    assert jobs["discover"]["env"]["KMI_REGISTRY"] == "${{ vars.KMI_REGISTRY }}"
    assert jobs["build"]["if"] == "${{ needs.discover.outputs.jobs != '0' }}"
    steps = jobs["build"]["steps"]
    run = next(s["run"] for s in steps if "doit build:" in s.get("run", ""))
    assert "push:${{ matrix.target }}" in run
    handed = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert handed["with"]["path"].splitlines() == [
        "build/${{ matrix.target }}/*.json",
        "build/${{ matrix.target }}/logs/",
    ]
    publish = jobs["publish"]
    assert publish["env"]["KMI_PUBLISH_FROM"] == "pushed"
    assert publish["env"]["KMI_INDEX_ARCHES"] == "built"
    collected = next(s for s in publish["steps"] if "download-artifact" in s.get("uses", ""))
    assert collected["with"]["pattern"] == "receipts-*"
    prune = next(s for s in publish["steps"] if "doit prune" in s.get("run", ""))
    assert prune["if"] == "${{ vars.KMI_PRUNE == '1' }}"
    assert prune["run"] == ".venv/bin/doit prune --delete"
