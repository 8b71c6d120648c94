"""The minify pipeline: source → sandbox + tracer → keep → write → verify → report, in that order.

This module only sequences the steps and owns the cleanup: one ExitStack holds
the scratch directory, the overlay mounts, and — until the result is verified —
the new tag, so an error, a failed verification or Ctrl-C leaves nothing
behind.  The source image is only ever read.
"""

from __future__ import annotations

import contextlib
import errno
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from neurodocker_nd.build.suite import Suite
from neurodocker_nd.core import engine
from neurodocker_nd.errors import NdgenError, TraceError
from neurodocker_nd.minify import keep as keep_step
from neurodocker_nd.minify import report as report_step
from neurodocker_nd.minify import stale
from neurodocker_nd.minify import verify as verify_step
from neurodocker_nd.minify import workload as workload_step
from neurodocker_nd.minify import write as write_step
from neurodocker_nd.minify.fanotify import FanotifyIncomplete, FanotifyUnavailable
from neurodocker_nd.minify.model import DEFAULT_TIMEOUT, CommandResult, Mount, Tracer, TraceRecord
from neurodocker_nd.minify.packages import PackageDb, read_database
from neurodocker_nd.minify.profile import Profile, run_setup, scratch_mounts
from neurodocker_nd.minify.sandbox import run_plain
from neurodocker_nd.minify.source import Source, interrupts_as_exceptions, open_source, scratch_base

MAX_REPAIRS = 3


class VerifyError(NdgenError):
    """The minified image does not reproduce the traced run."""


@attrs.frozen
class MinifyOptions:
    image: str
    tag: str
    commands: tuple[str, ...]  # the workload: a profile's commands, then each -c
    mounts: tuple[Mount, ...] = ()
    profile: Profile | None = None  # its setup makes the input data, untraced, before the trace
    keep: tuple[str, ...] = ()
    profile_keep: tuple[str, ...] = ()
    formats: frozenset[str] = frozenset({"docker"})
    tracer: str | None = None  # None: the default (fanotify, else ptrace)
    verify: bool = True
    repair: bool = True
    keep_failed: bool = False
    allow_fail: bool = False
    squashfs_out: Path | None = None
    baseline: bool = True  # run untraced once to report the tracer's overhead
    timeout: float = DEFAULT_TIMEOUT  # seconds per command, in every run (trace, untraced, setup, verify)
    keep_packages: bool = False  # keep whole every OS package owning a traced file
    package_names: tuple[str, ...] = ()  # --keep-package NAME: kept whole, traced or not
    suite: Suite | None = None  # --tests: a fulltest.yaml traced as workload, verified by its runner
    suite_data: Path | None = None  # the suite's data cache (required_files)


Progress = Callable[[str, float | None], None]  # (step, None) when it starts, (step, seconds) when done


def choose_tracer(requested: str | None) -> tuple[Tracer, str]:
    """The tracer to use and a note saying why (non-empty when falling back)."""
    from neurodocker_nd.minify.fanotify import FanotifyTracer, fanotify_available

    if requested == "ptrace":
        return _ptrace(), ""
    problem = fanotify_available()
    if problem is None:
        return FanotifyTracer(), ""
    return _ptrace(), f"{problem}: falling back to the ptrace tracer"


def _ptrace() -> Tracer:
    from neurodocker_nd.minify.ptrace import PtraceTracer

    return PtraceTracer()


@contextlib.contextmanager
def _step(name: str, progress: Progress, steps: list[tuple[str, float]]) -> Iterator[None]:
    """Time a step; turn a full disk (or another OS error) into one line naming the step."""
    progress(name, None)
    start = time.perf_counter()
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise NdgenError(f"no space left on device during {name} ({exc.filename or 'scratch'})") from exc
        raise NdgenError(f"{name} failed: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}") from exc
    seconds = time.perf_counter() - start
    steps.append((name, seconds))
    progress(name, seconds)


def _check_results(results: Sequence[CommandResult], allow_fail: bool, where: str) -> None:
    failed = next((r for r in results if not r.ok), None)
    if failed is not None and not allow_fail:
        last = (failed.stderr or failed.stdout).decode(errors="replace").strip().splitlines()[-1:]
        raise TraceError(
            f"command {failed.command!r} exited {failed.exit_code} {where}"
            f"{': ' + last[0][:200] if last else ''} (use --allow-fail to accept it)"
        )


def _materialize(root: Path, keep: keep_step.KeepSet, target: Path) -> Path:
    """The minified tree on disk (for re-tracing it): the same tar the image gets, unpacked."""
    target.mkdir(parents=True)
    archive = target.with_suffix(".tar")
    with open(archive, "wb") as fh:
        write_step.write_tar(root, keep, fh)
    write_step.unpack_tar(archive, target)
    archive.unlink()
    return target


def minify(options: MinifyOptions, progress: Progress = lambda name, seconds: None) -> report_step.Report:
    """Run every step; the report says what happened (``verified`` False: the tag was not kept)."""
    if not options.commands and options.suite is None:
        raise NdgenError("nothing to trace: give at least one -c CMD (or a --profile, or --tests SUITE)")
    tracer, tracer_note = choose_tracer(options.tracer)
    client = engine.connect()
    _refuse_source_tag(client, options)
    stale.reap(client, scratch_base())  # what killed runs left: mounts, scratch, containers, tags
    steps: list[tuple[str, float]] = []
    with interrupts_as_exceptions(), contextlib.ExitStack() as stack:
        with _step("open", progress, steps):
            source = stack.enter_context(open_source(client, options.image))
            if "singularity" in options.formats:  # refused before anything is traced or written
                write_step.check_singularity_layout(source.pristine, options.image)
            if source.method == "export-copy" and tracer.name == "fanotify":
                # No overlay of our own to mark: fanotify would watch the whole host filesystem.
                tracer, tracer_note = _ptrace(), "no overlay mount possible: using the ptrace tracer"
            mounts: tuple[Mount, ...] = options.mounts
            if options.profile is not None:
                mounts += scratch_mounts(options.profile, source.scratch / "profile")
            mount_set = verify_step.MountSet.snapshot(mounts, source.scratch)
            package_db = _package_db(source, options)
        if options.profile is not None and options.profile.setup:
            with _step("setup", progress, steps):
                # Its output becomes the initial content every later run gets a fresh copy of.
                run_setup(options.profile, source.view("setup"), source.config, mount_set.initial(), options.timeout)
        with _step("trace", progress, steps):
            record, trace_mounts, note = _trace_workload(tracer, source, options, mount_set)
            tracer_note = note or tracer_note
        # Measured after the trace: a cold page cache slows the traced run, so the reported
        # overhead errs high, never low.
        untraced: tuple[CommandResult, ...] = ()
        if options.baseline:
            with _step("untraced run", progress, steps):
                untraced = _run_untraced(source, options, mount_set)
        run = _Run(client, source, options, record, mount_set, trace_mounts, package_db)
        with _step("closure", progress, steps):
            keep = run.closure()
            if keep.unmatched:  # a typo must not silently drop what the user asked to keep
                raise NdgenError(f"--keep {keep.unmatched[0]}: no such path in {options.image}")
        # The import goes to a temporary tag: a user's existing NEW_TAG is replaced only by
        # a verified result, and whatever happens the temporary tag is removed on exit.
        work_tag = stale.temporary_tag(uuid.uuid4().hex[:12])
        stack.callback(write_step.remove_tag, client, work_tag)
        written = None
        if "docker" in options.formats or options.verify:
            with _step("write", progress, steps):
                written = run.write(keep, work_tag)
        outcome = _Verified(keep, written, report_step.Verdict())
        if options.verify:
            with _step("verify", progress, steps):
                outcome = _verify_and_repair(run, work_tag, keep, written)
        keep, written, verdict = outcome.keep, outcome.written, outcome.verdict
        # The SquashFS comes before the tag: with --format both, a refused or failed SquashFS
        # must not leave NEW_TAG moved.
        squashfs = None
        if "singularity" in options.formats and verdict.verified is not False:
            with _step("squashfs", progress, steps):
                out = options.squashfs_out or Path(_squashfs_name(options.tag))
                squashfs = write_step.write_squashfs(source.pristine, keep, source.config, list(options.commands), out)
        tag, verdict = _tag_result(client, options, work_tag, verdict)
        return report_step.Report.from_run(
            source_image=options.image,
            config=source.config,
            pristine=source.pristine,
            record=record,
            untraced=untraced,
            tracer_note=tracer_note,
            keep=keep,
            written=written,
            squashfs=squashfs,
            tag=tag,
            verdict=verdict,
            steps=steps,
            suite=options.suite.path if options.suite is not None else None,
        )


def _tag_result(
    client: Any, options: MinifyOptions, work_tag: str, verdict: report_step.Verdict
) -> tuple[str | None, report_step.Verdict]:
    """Move NEW_TAG to the work image when it passed verify (or --keep-failed asks for it anyway)."""
    if "docker" not in options.formats or (verdict.verified is False and not options.keep_failed):
        return None, verdict
    client.images.get(work_tag).tag(*engine.split_ref(options.tag))
    if verdict.verified is False:
        verdict = attrs.evolve(
            verdict, message=verdict.message + f" (kept {options.tag} for inspection: --keep-failed)"
        )
    return options.tag, verdict


def _refuse_source_tag(client: Any, options: MinifyOptions) -> None:
    """-t must not move a tag of the source image, however either is spelled.

    Compared as docker resolves them: the fully qualified references, and the image
    the target tag names now (an image ID, `repo`, `docker.io/library/repo:latest`).
    """
    source = engine.find_image(client, options.image)
    if source is None:
        return  # open reports the unknown image
    target = engine.normalize_ref(options.tag)
    same = any(engine.normalize_ref(t) == target for t in (source.tags or ()))
    current = engine.find_image(client, options.tag)
    if same or (current is not None and current.id == source.id):
        raise NdgenError(
            f"-t {options.tag} names the source image {options.image} ({source.short_id}): "
            "pick a new tag (the source's tags are never moved)"
        )


def _trace_workload(
    tracer: Tracer, source: Source, options: MinifyOptions, mount_set: verify_step.MountSet
) -> tuple[TraceRecord, tuple[Mount, ...], str]:
    """The -c commands' trace (as :func:`_trace`), with the --tests suite's paths merged in."""
    record, mounts, note = _trace(tracer, source, options, mount_set)
    if options.suite is not None:
        suite_record, suite_note = _trace_suite(tracer, source, options)
        note = suite_note or note
        record = _merged(record, suite_record)
    return record, mounts, note


def _trace(
    tracer: Tracer, source: Source, options: MinifyOptions, mount_set: verify_step.MountSet
) -> tuple[TraceRecord, tuple[Mount, ...], str]:
    """Trace the workload, with the mounts it ran on and a note when it fell back.

    fanotify refusing the rootfs, or losing events, means a rerun under ptrace on
    a fresh view with fresh mounts: a record that misses paths is worse than a slow one.
    """
    note = ""
    if not options.commands:  # a --tests suite alone: traced by _trace_suite
        return TraceRecord(frozenset(), frozenset(), (), tracer.name, 0.0), (), note
    mounts = mount_set.fresh(source.scratch, "trace")
    try:
        record = tracer.trace(
            source.view("trace"), source.config, options.commands, mounts,
            stop_on_failure=not options.allow_fail, timeout=options.timeout,
        )  # fmt: skip
    except (FanotifyUnavailable, FanotifyIncomplete) as exc:
        note = f"{exc}: falling back to the ptrace tracer"
        mounts = mount_set.fresh(source.scratch, "trace-ptrace")
        record = _ptrace().trace(
            source.view("trace-ptrace"), source.config, options.commands, mounts,
            stop_on_failure=not options.allow_fail, timeout=options.timeout,
        )  # fmt: skip
    _check_results(record.results, options.allow_fail, f"during the trace ({record.tracer})")
    return record, mounts, note


def _trace_suite(tracer: Tracer, source: Source, options: MinifyOptions) -> tuple[TraceRecord, str]:
    """Trace the --tests suite (setup, tests, cleanup, deploy check) on its own view and work dir.

    Exit codes are the suite runner's to judge at verify (a test may expect a failure).
    """
    assert options.suite is not None
    work = workload_step.prepare(options.suite, source.scratch / "suite-trace", source.config, options.suite_data)
    try:
        record = tracer.trace(
            source.view("suite-trace"), source.config, work.commands, (work.mount,),
            stop_on_failure=False, timeout=options.timeout,
        )  # fmt: skip
        return record, ""
    except (FanotifyUnavailable, FanotifyIncomplete) as exc:
        work = workload_step.prepare(options.suite, source.scratch / "suite-ptrace", source.config, options.suite_data)
        record = _ptrace().trace(
            source.view("suite-ptrace"), source.config, work.commands, (work.mount,),
            stop_on_failure=False, timeout=options.timeout,
        )  # fmt: skip
        return record, f"{exc}: falling back to the ptrace tracer"


def _merged(record: TraceRecord, suite_record: TraceRecord) -> TraceRecord:
    """The suite's paths join the record; its results do not (verify compares -c commands byte for byte)."""
    return attrs.evolve(
        record,
        paths=record.paths | suite_record.paths,
        missing=record.missing | suite_record.missing,
        executed=record.executed | suite_record.executed,  # their #! interpreters are kept too
        tracer=suite_record.tracer if not record.results else record.tracer,
        seconds=record.seconds + suite_record.seconds,
    )


def _squashfs_name(tag: str) -> str:
    return tag.replace("/", "_").replace(":", "_") + ".sqfs"


def _run_untraced(source: Source, options: MinifyOptions, mount_set: verify_step.MountSet) -> tuple[CommandResult, ...]:
    root = source.view("untraced")
    mounts = mount_set.fresh(source.scratch, "untraced")
    results = []
    for command in options.commands:
        results.append(run_plain(root, source.config, command, mounts, timeout=options.timeout))
        if not results[-1].ok and not options.allow_fail:
            break
    _check_results(results, options.allow_fail, "untraced in the source image")
    return tuple(results)


def _package_db(source: Source, options: MinifyOptions) -> PackageDb | None:
    """The image's package database when asked for; an unknown --keep-package is an error now."""
    if not (options.keep_packages or options.package_names):
        return None
    db = read_database(str(source.pristine), lambda command: _rpm_query(source, command))
    for name in options.package_names:
        if not db.lookup(name):
            raise NdgenError(f"--keep-package {name}: no such package installed in {options.image}")
    return db


def _rpm_query(source: Source, command: str) -> str:
    """An rpm image's database, listed by its own rpm in the sandbox (untraced, on a throwaway view)."""
    result = run_plain(source.view("packages"), source.config, command)
    if not result.ok:
        last = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()[-1:]
        raise NdgenError(
            f"--keep-packages: the image's rpm could not list its database (exit {result.exit_code})"
            f"{': ' + last[0][:200] if last else ''}"
        )
    return result.stdout.decode("utf-8", errors="surrogateescape")


@attrs.frozen
class _Run:
    """What the steps after the trace read: one minify run's inputs and the trace it made."""

    client: Any
    source: Source
    options: MinifyOptions
    record: TraceRecord
    mount_set: verify_step.MountSet
    trace_mounts: tuple[Mount, ...]  # the mounts the traced commands wrote to (compared at verify)
    package_db: PackageDb | None

    def closure(self, repaired: Sequence[str] = ()) -> keep_step.KeepSet:
        """The keep-set of the trace, plus the paths verify found missing (`repaired`)."""
        return keep_step.closure(
            self.source.pristine,
            self.source.config,
            self.record,
            mounts=self.mount_set.mounts,
            keep=self.options.keep,
            profile_keep=self.options.profile_keep,
            extra_paths=repaired,
            package_db=self.package_db,
            keep_packages=self.options.keep_packages,
            package_names=self.options.package_names,
        )

    def write(self, keep: keep_step.KeepSet, tag: str) -> write_step.Written:
        source = self.source
        return write_step.write_docker(
            self.client, source.pristine, keep, source.config, tag, list(self.options.commands)
        )


@attrs.frozen
class _Verified:
    """The keep-set and image verify ended with (repairs rewrite both), and its verdict."""

    keep: keep_step.KeepSet
    written: write_step.Written | None
    verdict: report_step.Verdict


def _verify_and_repair(run: _Run, tag: str, keep: keep_step.KeepSet, written: write_step.Written | None) -> _Verified:
    """Rerun in the new image; on a mismatch add what a re-trace found missing and retry."""
    source, options, mount_set = run.source, run.options, run.mount_set
    repaired: list[str] = []
    commands = [r.command for r in run.record.results]
    attempt = 0
    while True:
        mounts = mount_set.fresh(source.scratch, f"verify{attempt}")
        rerun = verify_step.rerun(run.client, tag, commands, mounts, options.timeout)
        mismatch = verify_step.compare_results(run.record.results, rerun) or verify_step.compare_outputs(
            run.trace_mounts, mounts
        )
        failed_suite = None
        if mismatch is None and options.suite is not None:
            suite_run = workload_step.verify(
                tag, options.suite, source.scratch / f"suite-verify{attempt}", options.suite_data
            )
            failed_suite = None if suite_run.passed else suite_run
        if mismatch is None and failed_suite is None:
            return _Verified(keep, written, report_step.Verdict(True, "", tuple(repaired)))
        if mismatch is not None:
            missing = _diagnose(
                source, keep, commands, mount_set.fresh(source.scratch, f"diagnose{attempt}"), attempt, options.timeout
            )
        else:  # the suite failed: re-trace it in the minified tree, on a fresh work directory
            assert options.suite is not None  # failed_suite is set only when a suite ran
            work = workload_step.prepare(
                options.suite, source.scratch / f"suite-diagnose{attempt}", source.config, options.suite_data
            )
            missing = _diagnose(source, keep, work.commands, (work.mount,), attempt, options.timeout)
        new = [p for p in missing if p not in keep.paths]
        if not new or not options.repair or attempt == MAX_REPAIRS:
            if mismatch is not None:
                message = attrs.evolve(mismatch, missing=tuple(new or missing)).message()
            else:
                message = _suite_failure(source, options, failed_suite, new or missing)
            return _Verified(keep, written, report_step.Verdict(False, message, tuple(repaired)))
        repaired += new
        attempt += 1
        keep = run.closure(repaired)
        written = run.write(keep, tag)


def _suite_failure(source: Source, options: MinifyOptions, run: Any, missing: Sequence[str]) -> str:
    """One line for a suite that fails on the minified image — or on the source already."""
    assert options.suite is not None
    on_source = workload_step.verify(options.image, options.suite, source.scratch / "suite-source", options.suite_data)
    if not on_source.passed:
        return (
            f"test suite {options.suite.path} fails on the source image {options.image} too: "
            f"{workload_step.failure_text(on_source)}"
        )
    hint = f"; likely missing: {', '.join(missing[:5])}" if missing else ""
    return (
        f"verify failed: test suite {options.suite.path} in the minified image: {workload_step.failure_text(run)}{hint}"
    )


def _diagnose(
    source: Source,
    keep: keep_step.KeepSet,
    commands: Sequence[str],
    mounts: Sequence[Mount],
    attempt: int,
    timeout: float,
) -> tuple[str, ...]:
    try:
        root = _materialize(source.pristine, keep, source.scratch / f"minified{attempt}")
        return verify_step.likely_missing(root, source.pristine, source.config, commands, mounts, timeout=timeout)
    except TraceError:
        return ()  # no ptrace here: the mismatch is still reported, without a hint
