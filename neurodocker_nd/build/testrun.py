"""Run a planned test suite (`suite.plan_suite`) in a Docker image, plus the deploy check.

Each command runs as neurocontainers' runner runs it under Apptainer — `bash
SCRIPT` from the work directory, which is mounted at the same path, as the
invoking user — but in a throw-away Docker container with no network at all
(`engine.run_once`). Nothing from the suite ever runs on the host: setup,
`host_script` and cleanup run in the image too, and only the work directory is
mounted (their runner also binds parents of absolute test_data paths).

A command's output is streamed, never held whole (`runcapture`): ndgen keeps
the last 64 KiB of stdout, stderr and both (the report, messages and JUnit show
that tail, marked when cut), `expected_output_contains` texts are searched in
the whole stream as it passes, the log gets the first 4 MiB then the tail, and
the deploy check's report is kept up to 4 MiB (more is a FAIL row).

Images built by ndgen's Apptainer stand-in (`defbuild`) are entered through
`/.singularity.d/actions/exec`, so `%environment` applies as under `apptainer
exec`.

The deploy check is the contract neurocontainers' CI enforces on every image
(workflows/test_deploy.sh, re-implemented here): each `DEPLOY_BINS` entry is a
bare command name found on PATH, each executable in the `DEPLOY_PATH`
directories exists, and every ELF file among them has all its shared libraries
(`ldd` in the image). Variables are read inside the container, so both image
ENV and a definition's `%environment` count.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePath
from typing import Any
from xml.etree import ElementTree as ET

import attrs

from neurodocker_nd.build import apptainer as defbuild
from neurodocker_nd.build.suite import SCRIPT_PREFIX, SETUP_TIMEOUT_S, PlannedTest, SuitePlan
from neurodocker_nd.core import emulation, engine, outfile, paths, runcapture, safefs
from neurodocker_nd.errors import NdgenError

PASS, FAIL, SKIP, WARN = "PASS", "FAIL", "SKIP", "WARN"
DEPLOY_TIMEOUT_S = 600.0
DEPLOY_OUTPUT_BYTES = 4 * 1024 * 1024  # the deploy report is parsed whole: kept up to this size
_TAIL = 160  # characters of the last output line quoted in a failure message


@attrs.frozen
class CaseResult:
    """One row of the report: a suite test, setup, cleanup or one deploy check."""

    name: str
    group: str  # "test" | "setup" | "cleanup" | "deploy"
    status: str  # PASS | FAIL | SKIP | WARN (WARN never fails a run: a failed cleanup)
    message: str = ""
    seconds: float = 0.0
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    command: str = ""


@attrs.frozen
class SuiteRun:
    image: str
    suite_name: str
    work_dir: Path
    log_path: Path
    results: tuple[CaseResult, ...]

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if r.status == FAIL)

    @property
    def passed(self) -> bool:
        return not self.failures


# --------------------------------------------------------------------------- public


def run_suite(
    image: str,
    plan: SuitePlan | None,
    *,
    data_cache: Path | None = None,
    deploy: bool = True,
    log_path: Path | None = None,
) -> SuiteRun:
    """Run `plan` (None: only the deploy check) in `image`; NdgenError for a missing image or data."""
    client = engine.connect()
    found = engine.local_image(client, image)
    emulation.check_image(found.attrs, f"testing {image}")  # an arm64 image runs only under qemu's F handler
    work_dir = plan.work_dir if plan else None
    log_path = Path(log_path) if log_path else engine.new_log_path("test", image)
    runner = _Runner(client, found.id, _exec_prefix(found), f"{os.getuid()}:{os.getgid()}", work_dir)
    results: list[CaseResult] = []
    with engine.step_log(log_path, f"testing {image}") as log:
        runner.log = log
        if plan is not None:
            stage_work(plan, data_cache)
            try:
                results += runner.suite(plan)
            finally:
                _remove_scripts(plan)
        if deploy:
            log.status(f"{image}: deploy check")
            results += runner.deploy()
    return SuiteRun(
        image=image,
        suite_name=plan.suite.name if plan else "deploy",
        work_dir=plan.work_dir if plan else Path("."),
        log_path=log_path,
        results=tuple(results),
    )


def stage_work(plan: SuitePlan, data_cache: Path | None) -> None:
    """Make the work directory: required_files copied from the data cache, output_dir emptied.

    Copies (not links), as their runner makes them: some tools rewrite inputs in place.
    A reused work directory holds whatever an earlier run's commands left (the
    image writes into it): every host write, removal and read in it goes through
    `safefs`, walking from the work directory's descriptor without following a
    symlink, so nothing the image planted can steer it onto a host path.
    """
    work = plan.work_dir
    try:
        work.mkdir(parents=True, exist_ok=True)  # the user's --work (or a fresh scratch): trusted
    except OSError as exc:
        raise NdgenError(f"cannot create the work directory {work}: {exc.strerror}") from None
    cache = Path(data_cache) if data_cache else work / ".data_cache"
    with safefs.opened(safefs.open_trusted_dir(work)) as work_fd:
        for needed in plan.suite.required_files:
            for name in needed.files:
                with _cache_file(plan, cache, needed.dataset, name) as source:
                    _copy_in(work_fd, _relative(plan.data_dir / needed.dataset / name, work), source, work)
        if plan.output_dir is not None:  # inside the work directory (checked when the suite was loaded)
            relative = _relative(plan.output_dir, work)
            with safefs.opened(_open_in_work(work_fd, relative.parent, work, create=True)) as parent:
                # The output directory itself (or a link to anywhere an earlier run left in its
                # place) is removed without following links, then made afresh.
                safefs.remove_at(parent, relative.name, shown=plan.output_dir)
                os.close(safefs.open_dir_at(parent, relative.name, create=True, shown=plan.output_dir))


def _relative(path: Path, work_dir: Path) -> PurePath:
    """`path` below the work directory (plans only make such paths; an empty one names nothing)."""
    relative = PurePath(os.path.normpath(path)).relative_to(os.path.normpath(work_dir))
    if not relative.parts:
        raise NdgenError(f"{path} is the work directory itself, not a path inside it")
    return relative


def _open_in_work(work_fd: int, relative: PurePath, work_dir: Path, *, create: bool = False) -> int:
    """A directory below the work directory, reached without following any link an earlier run left."""
    try:
        return safefs.open_dir(work_fd, relative, create=create, shown=work_dir)
    except safefs.UnsafePath as exc:
        raise NdgenError(
            f"{exc}: it leads out of the work directory {work_dir} (left by an earlier run's commands?); "
            "remove it or use a fresh --work"
        ) from None


@contextlib.contextmanager
def _cache_file(plan: SuitePlan, cache: Path, dataset: str, name: str) -> Iterator[int]:
    """An open descriptor of DATASET/NAME in the data cache (a regular file), or the exit-2 line.

    The cache is the user's (datalad's annex symlinks are followed to their
    content), unless it lies in the work directory, as the default does: there
    the image may have planted links, so the file must resolve inside the work
    directory (to a datalad annex object, say), never to a host file that
    would be copied where the image can read it.
    """
    source = cache / dataset / name
    contained = paths.resolve_inside(plan.work_dir, cache) is not None
    inside = paths.resolve_inside(plan.work_dir, source)
    if contained and inside is None:
        raise NdgenError(f"{source} leads out of the work directory {plan.work_dir} (a symlink?); use a fresh --work")
    real = inside or Path(os.path.realpath(source))  # the user's own cache: its links are followed anywhere
    try:
        # O_NOFOLLOW on the resolved path: no link may appear after it was resolved (and no
        # container of this run is running while the work directory is staged).
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if contained else 0))
    except OSError:
        fd = -1
    if fd < 0 or not stat.S_ISREG(os.fstat(fd).st_mode):
        if fd >= 0:
            os.close(fd)
        raise NdgenError(
            f"{plan.suite.path}: required_files: {dataset}/{name} is not in the data cache {cache} "
            f"(fetch it there, e.g. `datalad install -s https://github.com/OpenNeuroDatasets/{dataset}.git "
            f"{cache / dataset} && datalad get -d {cache / dataset} {name}`, or pass --data DIR)"
        )
    os.set_blocking(fd, True)
    with safefs.opened(fd):
        yield fd


def _copy_in(work_fd: int, relative: PurePath, source: int, work_dir: Path) -> None:
    """Copy the open `source` to `relative` in the work directory: a new file, mode and times kept."""
    shown = work_dir / relative
    with safefs.opened(_open_in_work(work_fd, relative.parent, work_dir, create=True)) as parent:
        info = os.fstat(source)
        # Permission bits only: a setuid bit on an image-written cache file must not become a
        # setuid file of the (possibly root) host user.
        with safefs.opened(
            safefs.create_file_at(parent, relative.name, stat.S_IMODE(info.st_mode) & 0o777, shown=shown)
        ) as target:
            try:
                with os.fdopen(os.dup(source), "rb") as reader, os.fdopen(os.dup(target), "wb") as writer:
                    shutil.copyfileobj(reader, writer, 1 << 20)
                os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
            except OSError as exc:
                raise NdgenError(f"cannot copy {shown}: {exc.strerror}") from None


def write_junit(run: SuiteRun, path: Path) -> None:
    """JUnit XML (one <testsuite>, a <testcase> per row) for CI dashboards; written whole or not at all."""
    suite = ET.Element(
        "testsuite",
        name=run.suite_name,
        tests=str(len(run.results)),
        failures=str(len(run.failures)),
        skipped=str(sum(r.status == SKIP for r in run.results)),
        time=f"{sum(r.seconds for r in run.results):.3f}",
    )
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="image", value=run.image)
    for result in run.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{run.suite_name}.{result.group}",
            name=result.name,
            time=f"{result.seconds:.3f}",
        )
        if result.status == FAIL:
            ET.SubElement(case, "failure", message=result.message, type="failure").text = result.message
        elif result.status == SKIP:
            ET.SubElement(case, "skipped", message=result.message)
        if result.stdout or result.status == WARN:
            ET.SubElement(case, "system-out").text = _xml_text(result.stdout or result.message)
        if result.stderr:
            ET.SubElement(case, "system-err").text = _xml_text(result.stderr)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    outfile.write_text(path, '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")


def _xml_text(text: str) -> str:
    # XML 1.0 cannot carry most control characters; test output may hold any byte.
    return "".join(c if c in "\t\n\r" or c >= " " else "\ufffd" for c in text)


# --------------------------------------------------------------------------- running


def _exec_prefix(image: Any) -> list[str]:
    """How a command enters the image: the stand-in's `actions/exec` (sources %environment), or directly."""
    entrypoint = (image.attrs.get("Config") or {}).get("Entrypoint") or []
    return [defbuild.EXEC_ENTRYPOINT] if entrypoint == [defbuild.RUN_ENTRYPOINT] else []


@attrs.define
class _Runner:
    client: Any
    image_id: str
    prefix: list[str]  # entrypoint prefix (the stand-in's exec action) or []
    user: str
    work_dir: Path | None
    log: Any = None

    def run(
        self,
        argv: list[str],
        timeout: float,
        label: str,
        probe: tuple[str, ...] = (),
        expect: tuple[str, ...] = (),
        tail_bytes: int = runcapture.TAIL_BYTES,
    ) -> runcapture.CapturedRun:
        binds = (self.work_dir,) if self.work_dir else ()
        entry = self.prefix + argv[:1]
        self.log.write(f"\n# {label}: {' '.join(argv)}\n")
        result = engine.run_once(
            self.client,
            self.image_id,
            argv[1:],
            entrypoint=entry,
            timeout=timeout,
            binds=binds,
            workdir=str(self.work_dir) if self.work_dir else None,
            user=self.user,
            labels={"org.ndgen.test": label[:200]},
            probe=probe,
            expect=expect,
            log=self.log.write,  # streamed, capped (runcapture.LOG_BYTES, then the tail)
            tail_bytes=tail_bytes,
        )
        self.log.write(f"\n# {label} → {result.exit_code} ({result.seconds:.1f} s)\n")
        return result

    def suite(self, plan: SuitePlan) -> list[CaseResult]:
        write_scripts(plan)
        results: list[CaseResult] = []
        setup_failed = None
        if plan.setup:
            self.log.status(f"{plan.suite.name}: setup")
            run = self.run(["bash", str(plan.work_dir / f"{SCRIPT_PREFIX}setup.sh")], SETUP_TIMEOUT_S, "setup")
            ok = run.exit_code == 0
            setup_failed = None if ok else _exit_text(run, SETUP_TIMEOUT_S)
            results.append(_row("setup", "setup", PASS if ok else FAIL, setup_failed or "", run))
        failed: set[str] = set()
        for index, test in enumerate(plan.tests):
            self.log.status(f"{plan.suite.name}: {test.name}", index, len(plan.tests))
            blocked = [d for d in test.test.depends_on if d in failed]
            if setup_failed or blocked:
                why = "setup failed" if setup_failed else f"depends on failed test(s): {', '.join(blocked)}"
                results.append(CaseResult(test.name, "test", SKIP, why))
                failed.add(test.name)  # dependents of a skipped test are skipped too (as in their runner)
                continue
            result = self.test(test)
            results.append(result)
            if result.status == FAIL:
                failed.add(test.name)
        if plan.cleanup:
            self.log.status(f"{plan.suite.name}: cleanup")
            run = self.run(["bash", str(plan.work_dir / f"{SCRIPT_PREFIX}cleanup.sh")], SETUP_TIMEOUT_S, "cleanup")
            ok = run.exit_code == 0
            results.append(
                _row("cleanup", "cleanup", PASS if ok else WARN, "" if ok else _exit_text(run, SETUP_TIMEOUT_S), run)
            )
        return results

    def test(self, test: PlannedTest) -> CaseResult:
        probe = tuple(_in_work(p, self.work_dir) for p in test.outputs)
        run = self.run(["bash", str(test.script_path)], test.timeout, test.name, probe, test.expected_output)
        return _row(test.name, "test", *_verdict(test, run, probe, self.work_dir), run)

    def deploy(self) -> list[CaseResult]:
        run = self.run(
            ["/bin/sh", "-c", DEPLOY_CHECK], DEPLOY_TIMEOUT_S, "deploy check", tail_bytes=DEPLOY_OUTPUT_BYTES
        )
        rows = [line.split("\t", 2) for line in run.stdout.splitlines() if line.count("\t") >= 2]
        results = [
            CaseResult(name, "deploy", status, message)
            for status, name, message in rows
            if status in (PASS, FAIL, SKIP)
        ]
        if run.stdout_cut:  # the first rows are lost: a FAIL among them must not pass unseen
            message = (
                f"{run.stdout_bytes} bytes of report, more than the {DEPLOY_OUTPUT_BYTES} kept "
                "(DEPLOY_BINS/DEPLOY_PATH too long?)"
            )
            results.append(CaseResult("deploy check", "deploy", FAIL, message))
        elif run.exit_code != 0 or not results:
            results.append(_row("deploy check", "deploy", FAIL, _exit_text(run, DEPLOY_TIMEOUT_S), run))
        return results


def _script_files(plan: SuitePlan) -> list[tuple[Path, str]]:
    files = [(t.script_path, t.script) for t in plan.tests]
    files += [(t.extra_path, t.extra_script or "") for t in plan.tests if t.extra_path is not None]
    if plan.setup:
        files.append((plan.work_dir / f"{SCRIPT_PREFIX}setup.sh", plan.setup + "\n"))
    if plan.cleanup:
        files.append((plan.work_dir / f"{SCRIPT_PREFIX}cleanup.sh", plan.cleanup + "\n"))
    for path, _ in files:
        if path.parent != plan.work_dir:  # suite.plan_suite puts every script there
            raise NdgenError(f"internal: script {path} is not directly in the work directory {plan.work_dir}")
    return files


def write_scripts(plan: SuitePlan) -> None:
    """The plan's scripts into its work directory (also used by `minify --tests` to trace them).

    Each is a new file made through the work directory's descriptor: whatever an
    earlier run's commands left under that name (a link, a directory) is removed,
    never followed.
    """
    with safefs.opened(safefs.open_trusted_dir(plan.work_dir)) as work_fd:
        for path, text in _script_files(plan):
            with safefs.opened(safefs.create_file_at(work_fd, path.name, 0o755, shown=path)) as fd:
                with os.fdopen(os.dup(fd), "w", encoding="utf-8") as handle:
                    handle.write(text)


def _remove_scripts(plan: SuitePlan) -> None:
    """The plan's own script names (a listing of the image-written work directory is not needed)."""
    with safefs.opened(safefs.open_trusted_dir(plan.work_dir)) as work_fd:
        for path, _ in _script_files(plan):
            safefs.remove_at(work_fd, path.name, shown=path)


def _in_work(path: str, work_dir: Path | None) -> str:
    # A relative output path is where the command ran: the work directory.
    return path if path.startswith("/") or work_dir is None else str(work_dir / path)


def _verdict(
    test: PlannedTest, run: runcapture.CapturedRun, probe: Sequence[str], work_dir: Path | None
) -> tuple[str, str]:
    """(status, message) by neurocontainers' rules, checked in their order."""
    spec = test.test
    if run.exit_code is None:
        return FAIL, f"timed out after {test.timeout:g} s (killed)"
    if not spec.ignore_exit_code:
        if spec.expected_exit_code_not is not None:
            if run.exit_code == spec.expected_exit_code_not:
                return FAIL, f"exit code should not be {spec.expected_exit_code_not}{_last_line(run)}"
        elif run.exit_code != spec.expected_exit_code:
            return FAIL, f"expected exit {spec.expected_exit_code}, got {run.exit_code}{_last_line(run)}"
    for expected in test.expected_output:  # searched in the whole stream while it ran (runcapture)
        if expected not in run.found:
            return FAIL, f"output lacks {expected[:60]!r}{_last_line(run)}"
    for path, shown in zip(probe, test.outputs, strict=True):  # probe: one path per output
        if path not in run.present:
            return FAIL, f"output not found: {shown}"
    for first, second in test.same_dimensions:
        problem = _dimension_problem(_in_work(first, work_dir), _in_work(second, work_dir), work_dir)
        if problem:
            return FAIL, problem
    return PASS, f"exit {run.exit_code}"


def _dimension_problem(first: str, second: str, work_dir: Path | None) -> str | None:
    """`same_dimensions`: both NIfTI files (in the work directory) have the same shape (nibabel, as theirs)."""
    relatives = [_below(p, work_dir) for p in (first, second)]
    if work_dir is None or None in relatives:
        return f"same_dimensions: {first} and {second} must be in the work directory to be compared"
    with contextlib.ExitStack() as stack:
        # The image wrote these: opened from the work directory without following a link (one
        # could name any host file), and only as regular files (a FIFO would block the read forever).
        try:
            work_fd = stack.enter_context(safefs.opened(safefs.open_trusted_dir(work_dir)))
            fds = [stack.enter_context(safefs.opened(_open_output(work_fd, rel, work_dir))) for rel in relatives if rel]
        except NdgenError as exc:
            return f"same_dimensions: {exc}"
        try:
            import nibabel  # type: ignore[import-not-found]  # optional: only same_dimensions needs it
        except ImportError:
            return "same_dimensions needs nibabel on the host (pip install nibabel)"
        # nibabel picks the format by the file name's suffix and opens by name: give it a private
        # name that is a magic link to the descriptor already checked, never the image's path again.
        links = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ndgen-dims-")))
        try:
            shapes = []
            for index, (fd, path) in enumerate(zip(fds, (first, second), strict=True)):
                named = links / str(index) / Path(path).name
                named.parent.mkdir()
                named.symlink_to(f"/proc/self/fd/{fd}")
                shapes.append(nibabel.load(named).shape)
        except Exception as exc:  # noqa: BLE001 - any unreadable file fails the check, with the reason
            return f"same_dimensions: cannot read: {exc}"
    return None if shapes[0] == shapes[1] else f"dimension mismatch: {shapes[0]} vs {shapes[1]}"


def _below(path: str, work_dir: Path | None) -> PurePath | None:
    """`path` relative to the work directory, by its text alone (no link is ever followed), or None."""
    if work_dir is None:
        return None
    base = PurePath(os.path.normpath(work_dir))
    normal = PurePath(os.path.normpath(base / path))  # a relative path is where the command ran
    return normal.relative_to(base) if normal.is_relative_to(base) and normal != base else None


def _open_output(work_fd: int, relative: PurePath, work_dir: Path) -> int:
    with safefs.opened(safefs.open_dir(work_fd, relative.parent, shown=work_dir)) as parent:
        return safefs.open_regular_at(parent, relative.name, shown=work_dir / relative)


def _last_line(run: runcapture.CapturedRun) -> str:
    last = next((ln.strip() for ln in reversed(run.output.splitlines()) if ln.strip()), "")
    return f": {last[:_TAIL]}" if last else ""


def _exit_text(run: runcapture.CapturedRun, timeout: float) -> str:
    if run.exit_code is None:
        return f"timed out after {timeout:g} s (killed)"
    return f"exit {run.exit_code}{_last_line(run)}"


def _row(name: str, group: str, status: str, message: str, run: runcapture.CapturedRun) -> CaseResult:
    return CaseResult(
        name=name,
        group=group,
        status=status,
        message=message,
        seconds=run.seconds,
        exit_code=run.exit_code,
        stdout=run.stdout,
        stderr=run.stderr,
    )


# The deploy contract, as POSIX sh run inside the image (no bash needed). One
# line per check: STATUS<TAB>NAME<TAB>MESSAGE.
DEPLOY_CHECK = r"""
set -f
report() { printf '%s\t%s\t%s\n' "$1" "$2" "$3"; }
is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | tail -c 3)" = ELF ]; }
problems() {  # what is wrong with executable $1: unresolved libraries, a missing interpreter; empty when fine
    if is_elf "$1"; then
        if command -v ldd >/dev/null 2>&1; then
            ldd "$1" 2>&1 | awk '/=> not found/ {printf "%s%s", sep, $1 " not found"; sep=", "}'
        fi
    else
        first=$(head -n 1 "$1" 2>/dev/null)
        case "$first" in
            '#!'*)
                # `#!/usr/bin/env NAME` names its real interpreter second
                interp=$(printf '%s' "${first#??}" | awk '{ if ($1 ~ /\/env$/ && NF > 1 && $2 !~ /^-/) print $2; else print $1 }')
                case "$interp" in
                    /*) [ -x "$interp" ] || printf 'interpreter %s missing' "$interp" ;;
                    *) command -v "$interp" >/dev/null 2>&1 || printf 'interpreter %s not on PATH' "$interp" ;;
                esac ;;
        esac
    fi
}
IFS=:
if [ -z "${DEPLOY_BINS:-}" ]; then
    report SKIP "DEPLOY_BINS" "not set"
else
    for bin in $DEPLOY_BINS; do
        [ -n "$bin" ] || continue
        case "$bin" in */*) report FAIL "bin $bin" "not a bare command name"; continue ;; esac
        found=$(command -v "$bin" 2>/dev/null)
        case "$found" in
            /*) bad=$(problems "$found")
                if [ -n "$bad" ]; then report FAIL "bin $bin" "$found: $bad"; else report PASS "bin $bin" "$found"; fi ;;
            *) report FAIL "bin $bin" "not found on PATH" ;;
        esac
    done
fi
if [ -z "${DEPLOY_PATH:-}" ]; then
    report SKIP "DEPLOY_PATH" "not set"
else
    for dir in $DEPLOY_PATH; do
        [ -n "$dir" ] || continue
        if [ ! -d "$dir" ]; then report FAIL "path $dir" "directory does not exist"; continue; fi
        count=0; bad=""
        set +f
        for file in "$dir"/* "$dir"/.[!.]*; do
            if [ -L "$file" ] && [ ! -e "$file" ]; then bad="$bad${bad:+; }${file##*/}: broken link"; continue; fi
            [ -f "$file" ] && [ -x "$file" ] || continue
            count=$((count + 1))
            why=$(problems "$file")
            [ -z "$why" ] || bad="$bad${bad:+; }${file##*/}: $why"
        done
        set -f
        if [ -n "$bad" ]; then report FAIL "path $dir" "$bad"; else report PASS "path $dir" "$count executables"; fi
    done
fi
"""  # noqa: E501 - a shell script: its lines are not Python's
