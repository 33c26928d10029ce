"""The nightly run at scale: which targets need a build job is asked of the registry (each
per-arch image carries the recipe it was made from), so a fresh checkout on another runner
gets the same answer as the machine that published. Against docker-registry on loopback
behind a recording proxy, with the synthetic final disks of tests/test_publish.py."""

from __future__ import annotations

import json
import shutil

from kmi.stages.containerdisk import RECIPE
from tests.test_publish import STEPS, Setup, skopeo_raw
from tests.test_publish import setup as setup  # the fixture


def matrix(setup: Setup) -> tuple[list[str], str]:
    """The targets `doit ci-matrix only=stale` gives jobs to, and its output."""
    done = setup.project.doit("ci-matrix", "only=stale")
    assert done.code == 0, done.out
    written = json.loads((setup.build / "ci-matrix.json").read_text())
    return sorted(job["target"] for job in written["include"]), done.out


def test_a_night_with_nothing_new_starts_no_job_on_a_fresh_runner(setup: Setup) -> None:
    where = f"{setup.proxy.host}/kmi"
    jobs, out = matrix(setup)  # nothing published yet: every target needs its job
    assert jobs == ["fixture-12-amd64", "twin-12-amd64"]
    assert f"ci-matrix: fixture-12-amd64: {where}/fixture:12 does not hold it" in out
    assert "ci-matrix: not pinned in the lock (discovery failed or never ran), left out: " in out
    published = setup.project.doit(*STEPS)
    assert published.code == 0, published.out
    manifest = skopeo_raw(setup.ref("fixture", "12"))["manifests"][0]  # type: ignore[index]
    arch = skopeo_raw(f"docker://{where}/fixture@{manifest['digest']}")
    assert len(arch["annotations"][RECIPE]) == 64  # type: ignore[index]
    # the discover job runs in a fresh checkout: no build folder, no receipts
    shutil.rmtree(setup.build)
    setup.proxy.reset()
    jobs, out = matrix(setup)
    assert jobs == [], out
    assert {s.method for s in setup.proxy.seen} <= {"GET", "HEAD"}
    assert len(setup.proxy.seen) <= 4 + 2  # an index and a manifest per image (+ auth pings)


def test_a_change_to_one_flavor_gives_jobs_to_its_targets_only(setup: Setup) -> None:
    assert setup.project.doit(*STEPS).code == 0
    twin = setup.project.catalogue / "twin.yaml"
    text = twin.read_text()
    assert "customize:\n" in text
    twin.write_text(text.replace("customize:\n", "customize:\n  update: true\n", 1))
    jobs, out = matrix(setup)
    assert jobs == ["twin-12-amd64"], out
    where = f"{setup.proxy.host}/kmi/twin:12"
    assert f"ci-matrix: twin-12-amd64: {where} holds it made from another recipe" in out


def test_an_unreachable_registry_fails_the_matrix_with_one_line(setup: Setup) -> None:
    setup.registry.stop()
    done = setup.project.doit("ci-matrix", "only=stale")
    assert done.code == 1
    assert "Traceback" not in done.out
    failed = [line for line in done.out.splitlines() if line.startswith("FAILED ci-matrix")]
    assert len(failed) == 1 and setup.proxy.host in failed[0], done.out
