"""`ndgen fleet plan` and `fleet workflow`: targets, fingerprints, reasons, the 256 split, bad input.

No image is built here: the engine is asked only for the base image's id (the fingerprint's
`base` part), and the registry is the real one (Debian's docker-registry on 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import yaml

from support import BASE_IMAGE, one_error_line, remove_images, run_ndgen, tool
from support.fleetdir import make_fleet, renamed

pytestmark = pytest.mark.docker


@pytest.fixture
def fleet(tmp_path, base_image):
    return make_fleet(tmp_path / "recipes")


def _plan(*args: str) -> dict:
    proc = run_ndgen("fleet", "plan", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _targets(data: dict) -> dict[tuple[str, str], dict]:
    return {(t["name"], t["arch"]): t for t in data["targets"]}


def test_one_target_per_recipe_and_architecture(fleet):
    data = _plan(str(fleet), "--runner", "aarch64=my-arm")
    targets = _targets(data)
    assert sorted(targets) == [
        ("broken", "x86_64"),
        ("ndcount", "x86_64"),
        ("ndgen-demo", "aarch64"),
        ("ndgen-demo", "x86_64"),
        ("ndtool", "x86_64"),
    ]
    demo_arm, demo_x86 = targets["ndgen-demo", "aarch64"], targets["ndgen-demo", "x86_64"]
    assert demo_arm["runner"] == "my-arm" and demo_x86["runner"] == "ubuntu-latest"
    assert demo_arm["fingerprint"] != demo_x86["fingerprint"]  # the recipe renders per arch
    assert {t["reason"] for k, t in targets.items() if k[0] != "broken"} == {"new"}  # no registry: no state
    # the invalid recipe is planned (its job shows the failure) and names its file and line
    assert targets["broken", "x86_64"]["reason"].startswith(f"invalid ({fleet}/broken/build.yaml:")
    assert "no-such-directive" in targets["broken", "x86_64"]["reason"]
    assert data["matrices"] == [[t for t in data["targets"]]]
    only = _plan(str(fleet), "--arch", "aarch64")
    assert [(t["name"], t["arch"]) for t in only["targets"]] == [("ndgen-demo", "aarch64")]
    assert [t["name"] for t in _plan(str(fleet), "--only", "ndtool")["targets"]] == ["ndtool"]


def test_matrices_split_at_max_jobs(fleet):
    data = _plan(str(fleet), "--max-jobs", "2")
    assert [len(m) for m in data["matrices"]] == [2, 2, 1]
    assert [t for m in data["matrices"] for t in m] == data["targets"]


def test_256_targets_per_matrix():
    from neurodocker_nd.fleet.plan import Plan, Planned
    from neurodocker_nd.fleet.targets import Target

    def planned(i: int, reason: str) -> Planned:
        return Planned(Target(f"r{i:03d}", "1", "x86_64", Path(".")), "f" * 64, {}, reason, "ubuntu-latest")

    # 298 targets (neurocontainers' 244 recipes, 54 also for aarch64) of which 10 are up to date
    plan = Plan(tuple(planned(i, "up to date" if i % 30 == 0 else "new") for i in range(298)), 256)
    assert [len(m) for m in plan.matrices] == [256, 32]
    assert all(t["reason"] == "new" for m in plan.matrices for t in m)


def _parts(target_dir: Path, **kw) -> tuple[str, dict[str, str]]:
    from neurodocker_nd.fleet import fingerprint as fp
    from neurodocker_nd.fleet.plan import fingerprint_parts
    from neurodocker_nd.fleet.targets import find_targets

    (target,) = [t for t in find_targets(target_dir.parent, only=[target_dir.name]) if t.arch == "x86_64"]
    parts = fingerprint_parts(target, kw.get("templates", ()), {})
    return fp.combine(parts), parts


def test_each_fingerprint_part_changes_it(tmp_path, base_image, docker_client):
    from neurodocker_nd.fleet import fingerprint as fp

    root = tmp_path / "recipes"
    root.mkdir()
    recipe = renamed(root, "ndtool", "ndtool")
    first, parts = _parts(recipe)
    assert set(parts) == set(fp.PARTS)
    # the recipe directory: a file no Dockerfile line shows (the suite) still counts
    with (recipe / "fulltest.yaml").open("a") as f:
        f.write("# edited\n")
    second, parts2 = _parts(recipe)
    assert second != first and fp.changed(parts, parts2) == ["recipe"]
    # a template it uses (from --templates): only the Dockerfile changes
    tdir = tmp_path / "templates"
    tdir.mkdir()
    (tdir / "ndhello.yaml").write_text("name: ndhello\nurl: https://example.org\nsource:\n  instructions: echo one\n")
    text = (
        (recipe / "build.yaml")
        .read_text()
        .replace("    - install: jq\n", "    - install: jq\n    - template:\n        name: ndhello\n")
    )
    (recipe / "build.yaml").write_text(text)
    before, parts3 = _parts(recipe, templates=(str(tdir),))
    (tdir / "ndhello.yaml").write_text("name: ndhello\nurl: https://example.org\nsource:\n  instructions: echo two\n")
    after, parts4 = _parts(recipe, templates=(str(tdir),))
    assert after != before and fp.changed(parts3, parts4) == ["render"]
    # the base image: the same name on another image
    base = f"i19-fleet-base-{uuid.uuid4().hex[:8]}:1"
    docker_client.images.get(base_image).tag(*base.split(":"))
    try:
        (recipe / "build.yaml").write_text(text.replace(f"base-image: {BASE_IMAGE}", f"base-image: {base}"))
        on_debian, parts5 = _parts(recipe, templates=(str(tdir),))
        import io

        other, _ = docker_client.images.build(
            fileobj=io.BytesIO(f"FROM {base_image}\n".encode()), labels={"i19": "other"}, network_mode="none"
        )
        other.tag(*base.split(":"))
        on_other, parts6 = _parts(recipe, templates=(str(tdir),))
        assert on_other != on_debian and fp.changed(parts5, parts6) == ["base"]
        assert parts6["base"] == other.id
    finally:
        remove_images(docker_client, [base])
    # the renderer version and the arch: the same parts otherwise
    assert fp.combine({**parts6, "renderer": "0.1.0+000000000000"}) != fp.combine(parts6)
    assert fp.combine({**parts6, "arch": "aarch64"}) != fp.combine(parts6)
    assert parts6["variant"] == "full" and fp.combine({**parts6, "variant": "minified"}) != fp.combine(parts6)


def test_renderer_version_hashes_the_render_code():
    import neurodocker_nd
    from neurodocker_nd import render
    from neurodocker_nd.fleet.fingerprint import renderer_version

    root = Path(render.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root)}\0".encode() + path.read_bytes())
    assert renderer_version() == f"{neurodocker_nd.__version__}+{digest.hexdigest()[:12]}"


def test_a_checkout_elsewhere_has_the_same_fingerprint(fleet, tmp_path):
    elsewhere = tmp_path / "clone" / "recipes"
    shutil.copytree(fleet, elsewhere)
    here, there = _targets(_plan(str(fleet))), _targets(_plan(str(elsewhere)))
    assert here["ndtool", "x86_64"]["fingerprint"] == there["ndtool", "x86_64"]["fingerprint"]


def test_two_recipes_with_one_name(fleet):
    renamed(fleet, "ndtool", "ndtool-copy")
    text = (fleet / "ndtool-copy" / "build.yaml").read_text().replace("name: ndtool-copy\n", "name: ndtool\n")
    (fleet / "ndtool-copy" / "build.yaml").write_text(text)
    targets = _plan(str(fleet))["targets"]
    dupes = [t for t in targets if t["name"] == "ndtool"]
    assert len(dupes) == 2
    assert all(
        t["reason"] == f"invalid (two recipes are named ndtool: {fleet}/ndtool and {fleet}/ndtool-copy)" for t in dupes
    )
    assert {t["reason"] for t in targets if t["name"] in ("ndcount", "ndgen-demo")} == {"new"}  # others unaffected


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ("--arch", "riscv64"),
            "ndgen: error: unsupported architecture 'riscv64': choose x86_64 (or amd64) or aarch64 (or arm64)",
        ),
        (("--only", "nosuch"), "ndgen: error: --only 'nosuch': no recipe of that name in"),
        (("--max-jobs", "257"), "ndgen: error: --max-jobs 257: a GitHub matrix holds 1 to 256 jobs"),
        (("--registry", "127.0.0.1:1"), "ndgen: error: registry 127.0.0.1:1 does not answer (GET /v2/)"),
        (("--registry", "Not A Registry"), "ndgen: error: --registry 'Not A Registry': expected HOST[:PORT]"),
    ],
)
def test_bad_input_is_one_line(fleet, args, needle):
    proc = run_ndgen("fleet", "plan", str(fleet), *args)
    assert proc.returncode == 2 and one_error_line(proc, needle)


def test_an_architecture_no_recipe_declares(fleet):
    shutil.rmtree(fleet / "ndgen-demo")  # the only aarch64 recipe
    proc = run_ndgen("fleet", "plan", str(fleet), "--arch", "aarch64")
    assert proc.returncode == 2 and one_error_line(
        proc, f"ndgen: error: --arch aarch64: no recipe in {fleet} declares it"
    )


def test_an_unwritable_report_path_fails_before_any_work(fleet, tmp_path):
    for path in (tmp_path / "no-dir" / "r.json", tmp_path):
        proc = run_ndgen("fleet", "run", str(fleet), "--registry", "127.0.0.1:1", "--report", str(path))
        assert proc.returncode == 2, proc.stderr
        assert one_error_line(proc, f"ndgen: error: --report {path}: ")  # before the dead registry is asked


# --------------------------------------------------------------------------- the workflow


def _workflow(fleet: Path, out: Path, *args: str) -> dict:
    proc = run_ndgen("fleet", "workflow", str(fleet), "-o", str(out), "--registry", "ghcr.io/lab", *args)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load((out / "ndgen-fleet.yml").read_text())


def test_workflow_passes_the_schema_and_zizmor(fleet, tmp_path):
    out = tmp_path / "wf"
    flow = _workflow(fleet, out, "--recipes-path", "recipes", "--runner", "aarch64=arm-large", "--branch", "main")
    path = out / "ndgen-fleet.yml"
    check = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    zizmor = subprocess.run(
        [tool("zizmor"), "--offline", "--persona", "auditor", str(path)], capture_output=True, text=True, timeout=120
    )
    assert zizmor.returncode == 0, zizmor.stdout + zizmor.stderr
    assert flow["permissions"] == {} and flow[True if True in flow else "on"]["push"] == {"branches": ["main"]}
    jobs = flow["jobs"]
    assert list(jobs) == ["plan", "build-0"]
    build = jobs["build-0"]
    assert build["strategy"] == {
        "fail-fast": False,
        "matrix": {"include": "${{ fromJSON(needs.plan.outputs.chunk0) }}"},
    }
    assert build["runs-on"] == "${{ matrix.runner }}" and build["permissions"] == {"contents": "read"}
    run_step = next(s for s in build["steps"] if s.get("name") == "build, test, push, promote")
    assert '--only "$NAME" --arch "$ARCH"' in run_step["run"] and "${{" not in run_step["run"]
    assert run_step["env"]["NDGEN_REGISTRY_PASSWORD"] == "${{ secrets.NDGEN_REGISTRY_PASSWORD }}"
    # only a push to the default branch promotes; a pull request pushes candidates
    assert run_step["env"]["PROMOTE"] == (
        "${{ github.event_name == 'push' && github.ref_name == github.event.repository.default_branch }}"
    )
    plan_step = next(s for s in jobs["plan"]["steps"] if s.get("id") == "plan")
    assert plan_step["env"]["RUNNER_AARCH64"] == "arm-large" and "${{" not in plan_step["run"]


def test_workflow_injection_through_a_recipe_name_is_caught_by_zizmor(fleet, tmp_path):
    """The test above can fail: zizmor flags a `${{ }}` expanded inside `run:`."""
    out = tmp_path / "wf"
    _workflow(fleet, out)
    path = out / "ndgen-fleet.yml"
    path.write_text(path.read_text().replace('--only "$NAME"', "--only ${{ matrix.name }}"))
    zizmor = subprocess.run(
        [tool("zizmor"), "--offline", "--persona", "auditor", str(path)], capture_output=True, text=True, timeout=120
    )
    assert zizmor.returncode != 0 and "template-injection" in zizmor.stdout


def test_workflow_has_a_matrix_job_per_256_targets(tmp_path, base_image):
    root = tmp_path / "recipes"
    make_fleet(root, broken=False, demo=False)
    for i in range(300):  # 302 targets: two chunks
        dest = root / f"r{i:03d}"
        dest.mkdir()
        (dest / "build.yaml").write_text(
            (root / "ndtool" / "build.yaml").read_text().replace("name: ndtool", f"name: r{i:03d}")
        )
    flow = _workflow(root, tmp_path / "wf")
    assert [j for j in flow["jobs"] if j.startswith("build-")] == ["build-0", "build-1"]
    assert set(flow["jobs"]["plan"]["outputs"]) == {"chunk0", "chunk1"}


@pytest.mark.parametrize(("args", "extras"), [((), "build"), (("--minify",), "build,minify")])
def test_workflow_installs_the_extras_its_jobs_need(fleet, tmp_path, args, extras):
    """`fleet run --minify` on a runner needs the minify extra (cli/extras.py): the default install says so."""
    jobs = _workflow(fleet, tmp_path / "wf", *args)["jobs"]
    install = next(s for s in jobs["build-0"]["steps"] if s.get("name") == "install ndgen")
    assert install["run"] == f"pip install 'neurodocker-nd[{extras}]'"
    assert (
        "--minify" in next(s for s in jobs["build-0"]["steps"] if s.get("name") == "build, test, push, promote")["run"]
    ) == bool(args)


def test_an_internal_error_fails_its_target_and_the_run_goes_on(tmp_path, monkeypatch):
    """ndgen's own bug in one target (an exception that is no NdgenError) is that target's failure,
    as one line; it is not recorded in the registry as the recipe's ("failed before" would skip it)."""
    from neurodocker_nd.fleet import oci, run
    from neurodocker_nd.fleet import plan as planning
    from neurodocker_nd.fleet.targets import Target

    def crash(*args, **kwargs):
        raise RuntimeError("a bug\nin ndgen")

    recorded: list[tuple] = []
    monkeypatch.setattr(run, "_work", crash)
    monkeypatch.setattr(run, "_record_failure", lambda *args: recorded.append(args))
    target = Target("tool", "1.0", "x86_64", tmp_path)
    planned = planning.Planned(target, "f" * 64, {}, "new", "ubuntu-24.04")
    options = run.RunOptions(planning.Options(tmp_path, oci.Registry.parse("127.0.0.1:5000")))
    lines: list[str] = []
    result = run._run_target(planned, options, threading.Event(), lines.append)
    assert (result.status, result.stage) == ("failed", "build")
    assert result.reason == "internal error: RuntimeError: a bug (set NDGEN_DEBUG=1 for a traceback)"
    assert lines[-1] == f"tool 1.0 x86_64: failed at build: {result.reason}"
    assert recorded == []
