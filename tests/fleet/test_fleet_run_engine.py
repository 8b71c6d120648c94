"""`ndgen fleet run` on the real engine and a real registry (Debian's docker-registry on 127.0.0.1).

One fleet — ndtool, ndcount (ndtool renamed), ndfail (ndtool with a suite that fails) and
broken (an unknown directive) — is run once per module with --jobs 2; the tests read what
it left in the registry, then rerun, change a recipe, refuse a push and interrupt a run.
Builds share BuildKit's cache (the three recipes differ only in names), so the module
costs about one apt install of jq through the apt cache.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from xml.etree import ElementTree as ET

import pytest

from support import NDGEN, one_error_line, remove_images, unique_tag
from support import run_ndgen as _run_ndgen
from support.fleetdir import make_fleet, renamed
from support.ociregistry import start

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = unique_tag("ndgen-test-fleet")
LOCAL = [f"{PREFIX}-{n}:2.0-x86_64" for n in ("ndtool", "ndcount", "ndfail")] + [f"{PREFIX}-ndcount:2.1-x86_64"]


def run_ndgen(*args: str, **kw):
    return _run_ndgen(*args, **kw)


def _fleet_args(registry: str, *extra: str) -> list[str]:
    proxy = os.environ.get("NDGEN_APT_PROXY", "")
    return ["--registry", registry, "--network", "host", "--apt-proxy", proxy, "--local-prefix", PREFIX, *extra]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, docker_client, base_image):
    root = tmp_path_factory.mktemp("fleet")
    recipes = make_fleet(root / "recipes", demo=False)
    failing = renamed(recipes, "ndtool", "ndfail")
    suite = (failing / "fulltest.yaml").read_text()
    (failing / "fulltest.yaml").write_text(suite.replace("home=/opt/ndtool", "home=/elsewhere"))
    registry = start(root / "registry")
    out = root / "out"
    out.mkdir()
    summary = out / "summary.md"
    started = time.monotonic()
    proc = run_ndgen(
        "fleet", "run", str(recipes), *_fleet_args(f"{registry.address}/lab", "--jobs", "2"),
        "--report", str(out / "report.json"), "--junit", str(out / "junit.xml"), "--markdown", str(summary),
    )  # fmt: skip
    seconds = time.monotonic() - started
    yield {"recipes": recipes, "registry": registry, "proc": proc, "out": out, "seconds": seconds, "root": root}
    registry.stop()
    remove_images(docker_client, LOCAL)


def _report(fleet) -> dict[str, dict]:
    return {t["name"]: t for t in json.loads((fleet["out"] / "report.json").read_text())["targets"]}


def _labels(registry, name: str, tag: str) -> dict[str, str] | None:
    from neurodocker_nd.fleet.oci import Registry

    return Registry.parse(f"{registry.address}/lab").labels(name, tag)


def test_passing_targets_are_promoted_and_failing_ones_are_not(fleet):
    proc, registry = fleet["proc"], fleet["registry"]
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = _report(fleet)
    assert {n: (t["status"], t["stage"]) for n, t in report.items()} == {
        "broken": ("failed", "render"),
        "ndcount": ("promoted", "promote"),
        "ndfail": ("failed", "test"),
        "ndtool": ("promoted", "promote"),
    }
    assert "no-such-directive" in report["broken"]["reason"] and report["broken"]["reason"].startswith(
        str(fleet["recipes"] / "broken" / "build.yaml")
    )
    assert report["ndfail"]["reason"].startswith("1 of 11 checks failed: environment")
    assert report["ndfail"]["log_tail"] and report["ndfail"]["digest"] is None
    assert proc.stderr.strip().splitlines()[-1] == (
        "ndgen: error: 2 of 4 targets failed: broken/x86_64 (render), ndfail/x86_64 (test)"
    )
    # one progress line per step, whole; the summary table on stdout
    assert "ndtool 2.0 x86_64: new: building\n" in proc.stderr
    assert "ndfail 2.0 x86_64: failed at test: 1 of 11 checks failed: environment" in proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[2:]}
    assert rows["ndtool"][2:5] == ["x86_64", "promoted", "promote"] and rows["ndtool"][-3:] == ["11", "passed", "new"]
    # the registry: VERSION for what passed, nothing for what failed
    assert registry.tags("lab/ndfail") == [f"failed-{report['ndfail']['fingerprint'][:32]}"]
    assert registry.tags("lab/broken") == []
    for name in ("ndtool", "ndcount"):
        fingerprint = report[name]["fingerprint"]
        assert registry.tags(f"lab/{name}") == ["2.0", f"candidate-{fingerprint[:32]}"]
        # promoted = the very manifest that was pushed after the tests passed
        promoted = registry.digest(f"lab/{name}", "2.0")
        assert promoted == report[name]["digest"] == registry.digest(f"lab/{name}", f"candidate-{fingerprint[:32]}")
        labels = _labels(registry, name, "2.0")
        assert labels["org.ndgen.fleet.fingerprint"] == fingerprint
        assert labels["org.ndgen.fleet.recipe"] == name and labels["org.ndgen.fleet.version"] == "2.0"
        assert labels["org.ndgen.fleet.ndgen-version"] == "0.1.0"
        assert labels["org.ndgen.fleet.tests"] == "11 passed"


def test_the_promoted_image_has_the_tested_layers(fleet, docker_client):
    report = _report(fleet)
    tested = docker_client.images.get(f"{PREFIX}-ndtool:2.0-x86_64")
    ref = f"{fleet['registry'].address}/lab/ndtool@{report['ndtool']['digest']}"
    pulled = docker_client.images.pull(ref)
    try:
        assert pulled.attrs["RootFS"]["Layers"] == tested.attrs["RootFS"]["Layers"]
        assert pulled.labels["org.ndgen.fleet.tests"] == "11 passed"
    finally:
        docker_client.images.remove(pulled.id, force=True)


def test_junit_and_markdown(fleet):
    suite = ET.parse(fleet["out"] / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("4", "2")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["ndfail:2.0"].find("failure").get("type") == "test"
    assert cases["ndtool:2.0"].find("failure") is None
    md = (fleet["out"] / "summary.md").read_text()
    assert md.startswith("### ndgen fleet: 2 promoted, 2 failed\n")
    assert "| ndtool 2.0 | x86_64 | promoted | promote |" in md


def test_plan_reads_the_registry(fleet):
    registry = f"{fleet['registry'].address}/lab"
    proc = run_ndgen("fleet", "plan", str(fleet["recipes"]), "--registry", registry, "--json")
    assert proc.returncode == 0, proc.stderr
    reasons = {t["name"]: t["reason"] for t in json.loads(proc.stdout)["targets"]}
    assert reasons["ndtool"] == reasons["ndcount"] == "up to date"
    assert reasons["ndfail"] == "failed before (test)"
    assert reasons["broken"].startswith("invalid (")
    # a change to one recipe: that one is `changed (recipe)`, and only it needs work
    suite = fleet["recipes"] / "ndcount" / "fulltest.yaml"
    original = suite.read_text()
    suite.write_text(original + "# edited\n")
    try:
        proc = run_ndgen("fleet", "plan", str(fleet["recipes"]), "--registry", registry, "--json", "--only", "ndcount")
        assert json.loads(proc.stdout)["targets"][0]["reason"] == "changed (recipe)"
    finally:
        suite.write_text(original)


def test_rerun_with_nothing_changed_skips_everything(fleet):
    started = time.monotonic()
    proc = run_ndgen(
        "fleet", "run", str(fleet["recipes"]), *_fleet_args(f"{fleet['registry'].address}/lab"),
        "--only", "ndtool", "--only", "ndcount", "--report", str(fleet["root"] / "rerun.json"),
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("(up to date)") == 2 and "building" not in proc.stderr
    first = _report(fleet)
    for target in json.loads((fleet["root"] / "rerun.json").read_text())["targets"]:
        assert (target["status"], target["reason"]) == ("skipped", "up to date")
        assert target["digest"] == first[target["name"]]["digest"]  # what is promoted there
    assert seconds < max(0.05 * fleet["seconds"], 10), (seconds, fleet["seconds"])  # bench/fleet.py measures it


def test_a_new_version_is_built_alone_and_the_old_one_stays(fleet, docker_client):
    registry = fleet["registry"]
    before = registry.digest("lab/ndcount", "2.0")
    recipes = fleet["root"] / "recipes-v21"
    make_fleet(recipes, broken=False, demo=False)
    shutil.rmtree(recipes / "ndcount")
    renamed(recipes, "ndtool", "ndcount", version="2.1")
    proc = run_ndgen(
        "fleet", "run", str(recipes), *_fleet_args(f"{registry.address}/lab"), "--report", str(recipes / "r.json")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = {t["name"]: t for t in json.loads((recipes / "r.json").read_text())["targets"]}
    assert (report["ndcount"]["status"], report["ndcount"]["reason"]) == ("promoted", "new")
    assert (report["ndtool"]["status"], report["ndtool"]["reason"]) == ("skipped", "up to date")
    assert registry.digest("lab/ndcount", "2.0") == before  # the older version stays
    assert registry.digest("lab/ndcount", "2.1") == report["ndcount"]["digest"]
    assert _labels(registry, "ndcount", "2.1")["org.ndgen.fleet.version"] == "2.1"


def test_a_refused_push_fails_that_target_at_push(fleet):
    readonly = start(fleet["root"] / "readonly", readonly=True)  # distribution's maintenance mode
    try:
        proc = run_ndgen(
            "fleet", "run", str(fleet["recipes"]), *_fleet_args(readonly.address),
            "--only", "ndtool", "--only", "broken", "--report", str(fleet["root"] / "ro.json"),
        )  # fmt: skip
        assert readonly.tags("ndtool") == []
    finally:
        readonly.stop()
    assert proc.returncode == 1, proc.stderr[-2000:]
    report = {t["name"]: t for t in json.loads((fleet["root"] / "ro.json").read_text())["targets"]}
    assert (report["ndtool"]["status"], report["ndtool"]["stage"]) == ("failed", "push")
    assert report["ndtool"]["reason"].startswith(f"pushing {readonly.address}/ndtool:candidate-")
    assert (report["broken"]["status"], report["broken"]["stage"]) == ("failed", "render")  # unaffected


def test_a_registry_that_does_not_answer(fleet):
    proc = run_ndgen("fleet", "run", str(fleet["recipes"]), *_fleet_args("127.0.0.1:1"))
    assert one_error_line(proc, "ndgen: error: registry 127.0.0.1:1 does not answer (GET /v2/): ")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_promotes_nothing_half_and_a_rerun_finishes(fleet):
    registry = start(fleet["root"] / "interrupted")
    try:
        args = [*_fleet_args(registry.address), "--only", "ndtool", "--only", "ndcount", "--jobs", "1"]
        proc = subprocess.Popen(
            [*NDGEN, "fleet", "run", str(fleet["recipes"]), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_sigint,  # Ctrl-C as a terminal delivers it (see test_minify_engine)
        )
        lines = []
        assert proc.stderr is not None
        for line in proc.stderr:  # the first target is being tested: interrupt it
            lines.append(line)
            if ": testing" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=300)
        stderr = "".join(lines) + rest
        assert proc.returncode == 130, stderr
        assert stderr.strip().splitlines()[-1] == "ndgen: interrupted"
        assert "interrupted: finishing the running stages, promoting nothing new" in stderr
        # each VERSION tag is either absent or a whole, tested image (labels and all)
        for name in ("ndtool", "ndcount"):
            labels = _labels_at(registry, name)
            assert labels is None or labels["org.ndgen.fleet.tests"] == "11 passed", labels
        assert any(_labels_at(registry, n) is None for n in ("ndcount", "ndtool"))  # it did stop early
        again = run_ndgen("fleet", "run", str(fleet["recipes"]), *args)
        assert again.returncode == 0, again.stderr
        for name in ("ndtool", "ndcount"):
            assert _labels_at(registry, name)["org.ndgen.fleet.tests"] == "11 passed"
    finally:
        registry.stop()


def _labels_at(registry, name: str):
    from neurodocker_nd.fleet.oci import Registry

    return Registry.parse(registry.address).labels(name, "2.0")


def test_minify_pushes_the_minified_image_after_its_suite_passes_again(fleet, docker_client):
    registry = start(fleet["root"] / "minified")
    report_path = fleet["root"] / "min.json"
    try:
        proc = run_ndgen(
            "fleet", "run", str(fleet["recipes"]), *_fleet_args(registry.address),
            "--only", "ndtool", "--minify", "--report", str(report_path),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        (target,) = json.loads(report_path.read_text())["targets"]
        assert target["status"] == "promoted" and set(target["stage_seconds"]) >= {"build", "test", "minify", "push"}
        labels = _labels_at(registry, "ndtool")
        assert labels["org.ndgen.fleet.tests"].startswith("11 passed, minified ")
        assert labels["org.ndgen.fleet.parts"].endswith(",variant=minified")
        full = docker_client.images.get(f"{PREFIX}-ndtool:2.0-x86_64")
        minified = docker_client.images.get(f"{PREFIX}-ndtool:2.0-x86_64-min")
        assert minified.attrs["Size"] < full.attrs["Size"] and target["image_size"] == minified.attrs["Size"]
        # a plan of the full images does not take the minified one for up to date
        plan = run_ndgen(
            "fleet", "plan", str(fleet["recipes"]), "--registry", registry.address, "--only", "ndtool", "--json"
        )
        assert json.loads(plan.stdout)["targets"][0]["reason"] == "changed (variant)"
    finally:
        registry.stop()
        remove_images(docker_client, [f"{PREFIX}-ndtool:2.0-x86_64-min"])
