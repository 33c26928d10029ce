"""The nightly run at scale: which targets need a build job is asked of the registry (each
per-arch image carries the recipe it was made from), so a fresh checkout on another runner
gets the same answer as the machine that published. Against docker-registry on loopback
behind a recording proxy, with the synthetic final disks of tests/test_publish.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kmi.stages.containerdisk import RECIPE
from tests.conftest import DoitRun
from tests.test_containerdisk import run
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


PUSHES = ["push:fixture-12-amd64", "push:twin-12-amd64"]


def publish_job(setup: Setup, folder: str, *receipts: Path) -> DoitRun:
    """The publish job of a night, on a runner of its own: a fresh build folder holding
    only the push receipts the build jobs handed over."""
    build = setup.project.work / folder
    for receipt in receipts:
        (build / receipt.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(receipt, build / receipt.parent.name / receipt.name)
    return setup.project.doit(
        *STEPS,
        KMI_BUILD_DIR=str(build),
        KMI_PUBLISH_FROM="pushed",
        KMI_INDEX_ARCHES="built",
        GITHUB_STEP_SUMMARY=str(build / "summary.md"),
    )


def test_the_publish_job_indexes_what_the_build_jobs_pushed_and_moves_no_disk(
    setup: Setup,
) -> None:
    pushed = setup.project.doit(*PUSHES)
    assert pushed.code == 0, pushed.out
    receipts = [setup.build / t / "push.json" for t in ("fixture-12-amd64", "twin-12-amd64")]
    digests = [json.loads(r.read_text())["digest"] for r in receipts]
    assert all(d.startswith("sha256:") for d in digests)
    assert sum(r.stat().st_size for r in receipts) < 2000  # what travels between the jobs
    sent = setup.proxy.blob_bytes()
    assert sent > 0
    setup.proxy.reset()
    job = publish_job(setup, "publish-job", *receipts)
    assert job.code == 0, job.out
    assert setup.proxy.blob_bytes() == 0 and setup.proxy.uploads() == 0  # no disk again
    assert f"fixture-12: amd64 {digests[0][:19]}… (pushed tonight)" in job.out
    manifests: list[dict[str, str]] = skopeo_raw(setup.ref("fixture", "12"))["manifests"]  # type: ignore[assignment]
    assert [m["digest"] for m in manifests] == [digests[0]]
    assert skopeo_raw(setup.ref("twin", "latest")) == skopeo_raw(setup.ref("twin", "12-20260101"))
    page = (setup.project.work / "publish-job" / "summary.md").read_text()  # the job's summary
    assert page.startswith("### kmi: `doit publish:fixture-12 publish:twin-12`\n")
    assert f"| fixture-12 | pushed | {job_digest(setup, 'fixture')} |" in page
    assert "FAILED" not in page
    # a push receipt is enough to be done; without it, pushing again sends nothing
    assert PUSHES[0] in setup.project.doit(PUSHES[0]).skipped()
    receipts[0].unlink()
    again = setup.project.doit(PUSHES[0])
    assert again.code == 0 and "is there, nothing sent" in again.out, again.out


def test_a_night_with_nothing_new_publishes_the_same_index_and_sends_nothing(
    setup: Setup,
) -> None:
    """Published the local way (a layout here), then a publish job with no receipts at all:
    every arch is reused from the registry and the index it makes is the one published."""
    assert setup.project.doit(*STEPS).code == 0
    before = skopeo_raw(setup.ref("fixture", "12"))
    setup.proxy.reset()
    job = publish_job(setup, "no-op-night")
    assert job.code == 0, job.out
    assert "fixture-12: amd64 " in job.out and "(unchanged, already in the registry)" in job.out
    results = json.loads((setup.project.work / "no-op-night" / "results.json").read_text())
    assert {r["status"] for r in results["images"].values()} == {"unchanged"}
    assert {s.method for s in setup.proxy.seen} <= {"GET", "HEAD"}
    assert skopeo_raw(setup.ref("fixture", "12")) == before


def job_digest(setup: Setup, flavor: str) -> str:
    """The first 19 characters of the index digest that `flavor:12` points at."""
    import hashlib

    raw = run("skopeo", "inspect", "--raw", "--tls-verify=false", setup.ref(flavor, "12"))
    return f"sha256:{hashlib.sha256(raw.encode()).hexdigest()}"[:19]


def test_an_arch_in_neither_place_is_left_out_or_stops_the_image(
    setup: Setup, tmp_path: Path
) -> None:
    build = setup.project.work / "empty-job"
    page = tmp_path / "summary.md"
    page.write_text("earlier step\n")
    done = setup.project.doit(
        "publish:fixture-12",
        KMI_BUILD_DIR=str(build),
        KMI_PUBLISH_FROM="pushed",
        GITHUB_STEP_SUMMARY=str(page),
    )
    assert done.code == 1 and "Traceback" not in done.out
    failed = (
        "fixture-12: not published: no image in the registry made from tonight's recipe for "
        "fixture-12-amd64; run doit push for them"
    )
    assert f"FAILED publish:fixture-12: {failed}" in done.out
    assert f"- **FAILED** `publish:fixture-12`: {failed}" in page.read_text()
    assert page.read_text().startswith("earlier step\n### kmi: ")
    nothing = setup.project.doit("publish:fixture-12", KMI_PUBLISH_FROM="pushed", KMI_REGISTRY="")
    assert (
        "KMI_PUBLISH_FROM=pushed indexes what is in the registry; set KMI_REGISTRY" in nothing.out
    )
