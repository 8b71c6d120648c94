"""Run a plan: each target through render → build → test → push a candidate → promote.

One target's failure stays in its target (its stage and the last lines of its log
go to the report); the others go on.  `jobs` targets run at once on a thread pool:
the work is in subprocesses (BuildKit) and engine calls, so threads only wait.

Promotion never rebuilds: the image that passed its tests gets the fleet's labels
in a config-only image (same layers, checked), that image is pushed once under a
candidate tag, and promotion is one manifest PUT of those very bytes under VERSION
in the registry — a single request, so an interrupt leaves the old tag or the new
one, never half of each.  A rerun after Ctrl-C recomputes the plan from the
registry: promoted targets are `up to date`, the others are built again (the
engine's recipe-hash label makes an unchanged build instant).
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from neurodocker_nd import __version__
from neurodocker_nd.core import engine
from neurodocker_nd.core.arch import Arch, docker_arch
from neurodocker_nd.errors import NdgenError, internal_error_line
from neurodocker_nd.fleet import plan as planning
from neurodocker_nd.fleet.oci import Manifest, Registry
from neurodocker_nd.fleet.targets import Target

DEFAULT_JOBS = 2  # two cores: one build and one test (or push) at a time keep both busy
LOG_TAIL = 5  # lines of a failed target's log quoted in the report
STAGES = ("plan", "render", "build", "test", "minify", "push", "promote")


@attrs.frozen
class Result:
    target: Target
    status: str  # promoted | candidate (pushed, not promoted) | skipped | failed | stopped
    stage: str  # the last stage reached (the failing one for a failure)
    reason: str  # the plan's reason; for a failure its one-line message
    fingerprint: str | None = None
    digest: str | None = None
    seconds: float = 0.0
    size: int | None = None  # bytes of the image's layers (uncompressed, from the engine)
    tests: str = ""  # "11 passed" / "2 of 11 failed"
    log_tail: tuple[str, ...] = ()
    log_path: str | None = None
    stage_seconds: dict[str, float] = attrs.field(factory=dict)  # build, test, push, promote: each one's time

    def as_json(self) -> dict[str, Any]:
        return {
            **self.target.identity(),
            "status": self.status,
            "stage": self.stage,
            "reason": self.reason,
            "digest": self.digest,
            "seconds": round(self.seconds, 2),
            "fingerprint": self.fingerprint,
            "image_size": self.size,
            "tests": self.tests,
            "log": self.log_path,
            "log_tail": list(self.log_tail),
            "stage_seconds": {k: round(v, 2) for k, v in self.stage_seconds.items()},
        }


@attrs.frozen
class RunOptions:
    plan: planning.Options
    jobs: int = DEFAULT_JOBS
    promote: bool = True  # False: push candidates only (a pull request)
    network: str = "default"
    apt_proxy: Any = None  # build.docker_build.AptProxy
    local_prefix: str = "ndgen-fleet"  # local tags: PREFIX-NAME:VERSION-ARCH


class _Failed(Exception):
    def __init__(self, stage: str, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.stage, self.message, self.log = stage, message, log


class _Stopped(Exception):
    pass


Progress = Callable[[str], None]  # one whole line per call


def run(options: RunOptions, progress: Progress) -> list[Result]:
    """Every target of the plan, at most `jobs` at once; a KeyboardInterrupt stops cleanly and re-raises."""
    if options.jobs < 1:
        raise NdgenError(f"--jobs {options.jobs}: at least 1")
    if not engine.is_image_name(f"{options.local_prefix}-x:1", host=False):
        raise NdgenError(f"--local-prefix {options.local_prefix!r}: not an image name (lower case, digits, . _ -)")
    if options.plan.registry is None:
        raise NdgenError("ndgen fleet run needs --registry: candidates are pushed and promoted there")
    targets = planning.find_targets(options.plan.directory, options.plan.arches, options.plan.only)
    options.plan.registry.ping()
    engine.live_progress(options.jobs == 1)
    stop = threading.Event()
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:  # whole lines, never two halves
            progress(line)

    # Planned first, one after the other: a plan is a render and a registry read per target, cheap
    # next to the builds. (Workers rendering at once are safe too: core.reproenv imports
    # neurodocker's modules one thread at a time.)
    bases: dict[str, str] = {}
    planned = [planning.plan_target(t, options.plan, bases) for t in targets]
    results: dict[str, Result] = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=options.jobs, thread_name_prefix="fleet")
    futures = {pool.submit(_run_target, p, options, stop, say): p for p in planned}
    try:
        pending = set(futures)
        while pending:  # a short wait, so the main thread sees Ctrl-C between waits
            done, pending = concurrent.futures.wait(pending, timeout=0.5)
            for future in done:
                result = future.result()
                results[result.target.key] = result
    except KeyboardInterrupt:
        stop.set()
        say("interrupted: finishing the running stages, promoting nothing new")
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        engine.live_progress(True)
    return [results[t.key] for t in targets]


def _run_target(planned: planning.Planned, options: RunOptions, stop: threading.Event, say: Progress) -> Result:
    started = time.monotonic()
    registry = options.plan.registry
    assert registry is not None
    target = planned.target
    label = f"{target.name} {target.version} {target.arch}"
    if planned.problem is not None:
        say(f"{label}: failed at {target.problem_stage}: {planned.problem}")
        return Result(target, "failed", target.problem_stage, planned.problem, seconds=time.monotonic() - started)
    if not planned.work:
        say(f"{label}: skipped (up to date)")
        return Result(
            target, "skipped", "plan", planned.reason, planned.fingerprint, planned.promoted, time.monotonic() - started
        )
    say(f"{label}: {planned.reason}: building")
    state: dict[str, Any] = {"stage": "build", "marks": []}
    try:
        result = _work(planned, options, registry, stop, say, state)
    except _Stopped:
        say(f"{label}: stopped before {state['stage']}")
        return Result(target, "stopped", state["stage"], "interrupted", planned.fingerprint)
    except _Failed as exc:
        tail = _tail(exc.log)
        say(f"{label}: failed at {exc.stage}: {exc.message}")
        _record_failure(registry, planned, exc.stage, exc.message)
        return Result(
            target,
            "failed",
            exc.stage,
            exc.message,
            planned.fingerprint,
            seconds=time.monotonic() - started,
            log_tail=tail,
            log_path=str(exc.log) if exc.log else None,
        )
    except Exception as exc:  # noqa: BLE001 - ndgen's own bug: this target fails, the others and the report go on
        message = internal_error_line(exc)
        if os.environ.get("NDGEN_DEBUG"):
            traceback.print_exc()
        say(f"{label}: failed at {state['stage']}: {message}")
        # Not recorded in the registry: "failed before" would skip a target that did nothing wrong.
        return Result(
            target, "failed", state["stage"], message, planned.fingerprint, seconds=time.monotonic() - started
        )
    ended = time.monotonic()
    marks = [*state["marks"], ("", ended)]
    stages = {stage: marks[i + 1][1] - t for i, (stage, t) in enumerate(marks[:-1])}
    result = attrs.evolve(result, seconds=ended - started, stage_seconds=stages)
    say(f"{label}: {result.status} {result.digest} in {result.seconds:.0f} s")
    return result


def _work(
    planned: planning.Planned,
    options: RunOptions,
    registry: Registry,
    stop: threading.Event,
    say: Progress,
    state: dict[str, Any],
) -> Result:
    from neurodocker_nd.build.imagetest import run_image_tests
    from neurodocker_nd.build.recipe_dir import build_recipe_dir
    from neurodocker_nd.render.recipe import RecipeError

    target = planned.target
    assert planned.fingerprint is not None
    _check(stop, state, "build")
    candidate_tag = f"candidate-{planned.fingerprint[:32]}"
    if options.promote:
        prior = _tested_candidate(registry, target.name, candidate_tag, planned.fingerprint)
        if prior is not None:  # a pull request (or an interrupted run) tested this very image
            say(f"{target.name} {target.version} {target.arch}: candidate {prior.digest} passed before: promoting it")
            _check(stop, state, "promote")
            _promote(registry, target, prior)
            labels = registry.labels(target.name, prior.digest) or {}
            tests = labels.get(planning.TESTS_LABEL, "")
            return Result(target, "promoted", "promote", planned.reason, planned.fingerprint, prior.digest, tests=tests)
    local = f"{options.local_prefix}-{target.name}:{target.version}-{target.arch}"
    build_log = engine.new_log_path("fleet-build", local)
    try:
        built = build_recipe_dir(
            target.recipe_dir,
            "docker",
            local,
            arch=target.arch,
            options=(),
            templates=options.plan.templates,
            test=True,
            no_cache=False,
            log_path=build_log,
            network=options.network,
            apt_proxy=options.apt_proxy,
        )
    except RecipeError as exc:
        raise _Failed("render", exc.message) from None
    except NdgenError as exc:
        raise _Failed("build", exc.message, build_log if build_log.exists() else None) from None
    _check_arch(built.outcome.image_id, target.arch, build_log)
    _check(stop, state, "test")
    say(f"{target.name} {target.version} {target.arch}: built {built.outcome.image_id[:19]}: testing")
    test_log = engine.new_log_path("fleet-test", local)
    try:
        tested = run_image_tests(local, built.suite, lambda run: None, log_path=test_log)
    except NdgenError as exc:
        raise _Failed("test", exc.message, test_log if test_log.exists() else None) from None
    run = tested.run
    if not run.passed:
        names = ", ".join(r.name for r in run.failures[:5])
        raise _Failed("test", f"{len(run.failures)} of {len(run.results)} checks failed: {names}", test_log)
    summary = f"{len(run.results)} passed"
    image_id = built.outcome.image_id
    if options.plan.minify:
        _check(stop, state, "minify")
        say(f"{target.name} {target.version} {target.arch}: tested: minifying")
        image_id, summary = _minify(local, built.suite, test_log.with_suffix(".min.log"))
    _check(stop, state, "push")
    client = engine.connect()
    labels = {
        planning.FINGERPRINT_LABEL: planned.fingerprint,
        planning.PARTS_LABEL: planning.fp.encode_parts(planned.parts),
        planning.NAME_LABEL: target.name,
        planning.VERSION_LABEL: target.version,
        planning.NDGEN_LABEL: __version__,
        planning.TESTS_LABEL: summary,
    }
    candidate = registry.image(target.name, candidate_tag)
    size = _relabel(client, image_id, candidate, labels)
    try:
        digest = _push(client, candidate)
    finally:
        _untag(client, candidate)
    if not options.promote:
        return Result(
            target, "candidate", "push", planned.reason, planned.fingerprint, digest, size=size, tests=summary
        )
    _check(stop, state, "promote")
    try:
        manifest = registry.manifest(target.name, digest)
    except NdgenError as exc:
        raise _Failed("promote", exc.message) from None
    if manifest is None:
        raise _Failed("promote", f"registry {registry} lost {target.name}@{digest} after the push")
    _promote(registry, target, manifest)
    return Result(target, "promoted", "promote", planned.reason, planned.fingerprint, digest, size=size, tests=summary)


def _check_arch(image_id: str, arch: Arch, log: Path) -> None:
    """The image is for the target's architecture: a `_arm64` tag never holds an amd64 image
    (an engine that builds for its own platform only, before `ndgen build --arch` can emulate)."""
    found = engine.connect().images.get(image_id).attrs.get("Architecture")
    if found != docker_arch(arch):
        raise _Failed("build", f"the image is for {found}, not {docker_arch(arch)} ({arch})", log)


def _minify(local: str, suite: Any, test_log: Path) -> tuple[str, str]:
    """`ndgen minify LOCAL --tests fulltest.yaml` as LOCAL-min, then its suite again; (image id, summary)."""
    from neurodocker_nd.build.imagetest import run_image_tests
    from neurodocker_nd.minify.pipeline import MinifyOptions, minify

    if suite is None:
        raise _Failed("minify", "--minify needs the recipe's fulltest.yaml: it is the workload")
    minified = f"{local}-min"
    try:
        report = minify(MinifyOptions(image=local, tag=minified, commands=(), suite=suite, baseline=False))
    except NdgenError as exc:
        raise _Failed("minify", exc.message) from None
    if not report.verified or report.image_id is None:
        raise _Failed("minify", f"the minified image did not pass verification: {report.verify_message}")
    try:
        tested = run_image_tests(minified, suite, lambda run: None, log_path=test_log)
    except NdgenError as exc:
        raise _Failed("minify", exc.message, test_log if test_log.exists() else None) from None
    if not tested.run.passed:
        names = ", ".join(r.name for r in tested.run.failures[:5])
        raise _Failed("minify", f"{len(tested.run.failures)} checks failed in the minified image: {names}", test_log)
    ratio = report.size_before / max(report.size_after, 1)
    return report.image_id, f"{len(tested.run.results)} passed, minified {ratio:.1f}x"


def _tested_candidate(registry: Registry, name: str, tag: str, fingerprint: str) -> Manifest | None:
    """The candidate pushed for this fingerprint, when there is one: only images whose tests
    passed are ever pushed, and its label must carry the very fingerprint (a tag can be moved)."""
    try:
        manifest = registry.manifest(name, tag)
        if manifest is None:
            return None
        labels = registry.config(name, manifest).get("config", {}).get("Labels") or {}
    except NdgenError:
        return None  # no usable candidate: build it again
    return manifest if labels.get(planning.FINGERPRINT_LABEL) == fingerprint else None


def _promote(registry: Registry, target: Target, manifest: Manifest) -> None:
    """One manifest PUT of the tested bytes under VERSION[_arm64]: the tag moves whole or not at all."""
    try:
        registry.put_manifest(target.name, target.tag, manifest)
    except NdgenError as exc:
        raise _Failed("promote", exc.message) from None


def _check(stop: threading.Event, state: dict[str, Any], stage: str) -> None:
    state["stage"] = stage
    state["marks"].append((stage, time.monotonic()))
    if stop.is_set():
        raise _Stopped()


def _relabel(client: Any, image_id: str, ref: str, labels: dict[str, str]) -> int:
    """A config-only image over the tested one (FROM it + labels), tagged `ref`; its size.

    The legacy builder makes no layer for a Dockerfile of FROM alone: the layers are
    the tested image's, which is checked, so what is pushed is what passed.
    """
    tested = client.images.get(image_id)
    repo, tag = engine.split_ref(ref)
    try:
        image, _ = client.images.build(
            fileobj=io.BytesIO(f"FROM {image_id}\n".encode()),
            tag=f"{repo}:{tag}",
            labels=labels,
            rm=True,
            network_mode="none",
            pull=False,
        )
    except Exception as exc:  # noqa: BLE001 - the SDK's BuildError / APIError: one line
        raise _Failed("push", f"labelling {ref}: {engine.first_line(exc)}") from None
    if image.attrs["RootFS"]["Layers"] != tested.attrs["RootFS"]["Layers"]:
        raise _Failed("push", f"labelling {ref} changed its layers: nothing is pushed")
    return int(image.attrs.get("Size") or 0)


def _push(client: Any, ref: str) -> str:
    """`docker push REF` through the engine; the manifest digest the registry stored."""
    repo, tag = engine.split_ref(ref)
    digest = None
    try:
        for event in client.images.push(repo, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise _Failed("push", f"pushing {ref}: {' '.join(str(event['error']).split())[:300]}")
            aux = event.get("aux") or {}
            if isinstance(aux, dict) and str(aux.get("Digest", "")).startswith("sha256:"):
                digest = str(aux["Digest"])
    except _Failed:
        raise
    except Exception as exc:  # noqa: BLE001 - the engine refused: one line
        raise _Failed("push", f"pushing {ref}: {engine.first_line(exc)}") from None
    if digest is None:
        raise _Failed("push", f"pushing {ref}: the engine reported no digest")
    return digest


def _untag(client: Any, ref: str) -> None:
    try:
        client.images.remove(ref, noprune=False)
    except Exception:  # noqa: BLE001, S110 - a local tag left behind is harmless
        pass


def _record_failure(registry: Registry, planned: planning.Planned, stage: str, message: str) -> None:
    """`failed-FP` in the recipe's repository: a manifest with no layers whose config says why,
    so the next plan on any runner reports `failed before (STAGE)`.  Best effort: a registry
    that refuses it does not hide the failure itself."""
    if planned.fingerprint is None or stage == "push":
        return
    config = json.dumps(
        {
            "architecture": "amd64" if planned.target.arch == "x86_64" else "arm64",
            "os": "linux",
            "config": {
                "Labels": {
                    planning.FINGERPRINT_LABEL: planned.fingerprint,
                    "org.ndgen.fleet.stage": stage,
                    "org.ndgen.fleet.error": message[:500],
                }
            },
            "rootfs": {"type": "layers", "diff_ids": []},
        },
        sort_keys=True,
    ).encode()
    try:
        name = planned.target.name
        digest = registry.put_blob(name, config)
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": digest,
                    "size": len(config),
                },
                "layers": [],
            },
            sort_keys=True,
        ).encode()
        import hashlib

        manifest = Manifest(
            body, "application/vnd.oci.image.manifest.v1+json", "sha256:" + hashlib.sha256(body).hexdigest()
        )
        registry.put_manifest(name, planning.failure_tag(planned.fingerprint), manifest)
    except NdgenError:
        pass


def _tail(log: Path | None) -> tuple[str, ...]:
    if log is None:
        return ()
    try:
        with log.open("rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 16384))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ()
    return tuple(line[:300] for line in lines if line.strip())[-LOG_TAIL:]
