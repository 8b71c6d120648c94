"""Test suites in neurocontainers' `fulltest.yaml` format → an immutable, planned `Suite`.

Two steps, both pure (no engine, no file writes):

* :func:`load_suite` reads and schema-checks the YAML (errors: one line with
  file:line and the YAML path) into a :class:`Suite`.
* :func:`plan_suite` binds it to a work directory: it computes the `${var}`
  variables the way neurocontainers' runner (builder/run_tests.py) does —
  top-level scalars (`${name}`, `${version}`, …), `test_data` paths made
  absolute (relative ones under the suite's data directory, `output_dir`
  under the work directory) — and substitutes them into every script,
  expected text and validated path. The result, a :class:`SuitePlan`, is what
  the runner (`testrun.py`) executes and what a tracer can replay.

Deliberate differences from that runner (docs/testing.md): `$name` without
braces is replaced only as a whole word (theirs also rewrites `$name_x`), and
`output_dir` / `required_files` must stay inside the work directory — a suite
is untrusted input and never names host paths for ndgen to delete or mount.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import attrs

from neurodocker_nd.core import paths
from neurodocker_nd.core.yamlfile import (
    DataFileError,
    check_schema,
    item_lines,
    line_of,
    parse_yaml,
    read_text,
    schema_validator,
)
from neurodocker_nd.errors import NdgenError

SCHEMA_NAME = "fulltest.schema.json"
RECIPE_SUITE = "fulltest.yaml"  # a recipe directory's suite (neurocontainers' layout)
DEFAULT_TIMEOUT_S = 120.0  # neurocontainers' runner default
SETUP_TIMEOUT_S = 120.0  # their runner gives setup scripts 120 s
OUTPUT_DIR = "output_dir"
SCRIPT_PREFIX = ".ndgen-test-"  # the runner's script files in the work directory
# Top-level keys with a meaning of their own: never ${variables} (as in their runner).
_RESERVED = frozenset(
    {
        "container",
        "pin_container",
        "test_data",
        "setup",
        "cleanup",
        "tests",
        "env_setup",
        "default_timeout",
        "matlab_runtime",
        "script_runner",
        "script_ext",
        "required_files",
    }
)
_SUBSTITUTION_ROUNDS = 10  # values may name other variables; their runner also stops after 10


@attrs.frozen
class RequiredData:
    """Files of one OpenNeuro dataset a suite needs (`required_files`)."""

    dataset: str
    files: tuple[str, ...]


@attrs.frozen
class Validation:
    """One `validate:` entry: `kind` (output_exists, same_dimensions, …) and its raw arguments."""

    kind: str
    args: tuple[str, ...]


@attrs.frozen
class SuiteTest:
    """One entry of `tests:`, as written (variables not yet substituted)."""

    name: str
    line: int  # 1-based line in the suite file, for messages
    command: str | None = None
    script: str | None = None
    env_setup: str | None = None  # replaces the suite's env_setup when set
    expected_output_contains: tuple[str, ...] = ()
    expected_exit_code: int = 0
    expected_exit_code_not: int | None = None
    ignore_exit_code: bool = False
    validate: tuple[Validation, ...] = ()
    depends_on: tuple[str, ...] = ()
    timeout: float | None = None
    tags: tuple[str, ...] = ()


@attrs.frozen
class Suite:
    """A validated `fulltest.yaml`."""

    path: Path
    name: str
    version: str
    default_timeout: float
    tests: tuple[SuiteTest, ...]
    setup_script: str | None = None
    host_script: str | None = None  # neurocontainers runs it on the host; ndgen in the image
    cleanup_script: str | None = None
    test_data: tuple[tuple[str, str], ...] = ()
    required_files: tuple[RequiredData, ...] = ()
    env_setup: str | None = None  # `env:` exports first, then `env_setup:`
    scalars: tuple[tuple[str, str], ...] = ()  # top-level scalars (name, version, …), resolved
    script_runner: str | None = None
    script_ext: str = ".sh"

    @property
    def data_name(self) -> str:
        """The per-suite data directory's name (`WORK/<name>/` holds required_files)."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name).strip("._") or "suite"


@attrs.frozen
class PlannedTest:
    """A test bound to a work directory: the bash script to run and what to check afterwards."""

    test: SuiteTest
    script: str  # the whole script (#!/usr/bin/env bash, env setup, command), variables substituted
    script_path: Path  # where the runner writes `script` (inside the work directory)
    extra_script: str | None  # a `script:` test's own text, saved as a file the command runs
    extra_path: Path | None
    timeout: float
    expected_output: tuple[str, ...]
    outputs: tuple[str, ...]  # output_exists paths, substituted
    same_dimensions: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return self.test.name


@attrs.frozen
class SuitePlan:
    """A suite bound to a work directory: everything the runner executes, nothing left to compute."""

    suite: Suite
    work_dir: Path
    data_dir: Path  # where test_data's relative paths point (WORK/<name> with required_files)
    variables: tuple[tuple[str, str], ...]
    setup: str | None  # host_script + script, substituted
    cleanup: str | None
    tests: tuple[PlannedTest, ...]

    @property
    def output_dir(self) -> Path | None:
        value = dict(self.variables).get(OUTPUT_DIR)
        return Path(value) if value else None


# --------------------------------------------------------------------------- load


def load_suite(path: str | Path) -> Suite:
    """Read and check a `fulltest.yaml` the user named; every problem is one NdgenError line naming file:line.

    The user's own path (a link they made included) is followed; what it
    names must be a regular file of at most yamlfile.MAX_YAML_BYTES, checked
    on the open descriptor, so a FIFO or a device is refused, never waited on.
    A recipe directory's suite is untrusted: see load_recipe_suite.
    """
    path = Path(path)
    if not path.exists():
        raise NdgenError(f"test suite not found: {path}")
    return parse_suite(read_text(path), path)


def load_recipe_suite(recipe_dir: Path) -> Suite | None:
    """A recipe directory's fulltest.yaml, or None when it has none.

    Read like every other file of a recipe tree (paths.read_text_inside): a
    link may not lead out of the directory, only a regular file is read, and
    at most paths.MAX_RECIPE_TEXT bytes of it.
    """
    shown = recipe_dir / RECIPE_SUITE
    if not os.path.lexists(shown):  # whatever is there (a link, a FIFO) is for the contained reader to judge
        return None
    try:
        text = paths.read_text_inside(recipe_dir, RECIPE_SUITE, shown=str(shown))
    except paths.UnsafePath as exc:
        raise DataFileError(exc.message) from None
    return parse_suite(text, shown)


def parse_suite(text: str, path: Path) -> Suite:
    """Check a suite's YAML `text`, read from `path` (named in every error); nothing is read again."""
    data = parse_yaml(text, path)
    if not isinstance(data, dict):
        raise DataFileError(f"{path}:1: a test suite is a mapping with name: and tests:")
    check_schema(data, path, schema_validator(paths.schemas_dir() / SCHEMA_NAME), "fulltest", text)
    lines = item_lines(path, "tests", text)
    tests = tuple(_test(item, lines[index]) for index, item in enumerate(data["tests"]))
    _check_depends(tests, path)
    _check_inside(data, path, text)
    scalars = _scalars(data)
    setup = data.get("setup") or {}
    return Suite(
        path=path,
        name=str(data["name"]),
        version=dict(scalars).get("version", ""),
        default_timeout=float(data.get("default_timeout", DEFAULT_TIMEOUT_S)),
        tests=tests,
        setup_script=setup.get("script") or None,
        host_script=setup.get("host_script") or None,
        cleanup_script=(data.get("cleanup") or {}).get("script") or None,
        test_data=tuple((str(k), str(v)) for k, v in (data.get("test_data") or {}).items()),
        required_files=tuple(
            RequiredData(str(e["dataset"]), tuple(str(f) for f in e["files"])) for e in data.get("required_files") or ()
        ),
        env_setup=_env_setup(data),
        scalars=scalars,
        script_runner=_script_runner(data),
        script_ext=_script_ext(data),
    )


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def _test(item: Mapping[str, Any], line: int) -> SuiteTest:
    validations = tuple(
        Validation(kind, _as_tuple(arg)) for entry in item.get("validate") or () for kind, arg in entry.items()
    )
    return SuiteTest(
        name=item["name"],
        line=line,
        command=item.get("command"),
        script=item.get("script") if "command" not in item else None,  # their runner: command wins
        env_setup=item.get("env_setup"),
        expected_output_contains=_as_tuple(item.get("expected_output_contains")),
        expected_exit_code=int(item.get("expected_exit_code", 0)),
        expected_exit_code_not=item.get("expected_exit_code_not"),
        ignore_exit_code=bool(item.get("ignore_exit_code", False)),
        validate=validations,
        depends_on=_as_tuple(item.get("depends_on")),
        timeout=float(item["timeout"]) if "timeout" in item else None,
        tags=_as_tuple(item.get("tags")),
    )


def _check_depends(tests: Sequence[SuiteTest], path: Path) -> None:
    """`depends_on` must name an earlier test: a later or unknown name could never be skipped on."""
    seen: set[str] = set()
    for test in tests:
        for dep in test.depends_on:
            if dep not in seen:
                where = "a later test" if any(t.name == dep for t in tests) else "no test"
                raise DataFileError(f"{path}:{test.line}: test {test.name!r}: depends_on {dep!r} names {where}")
        seen.add(test.name)


def _check_inside(data: Mapping[str, Any], path: Path, text: str) -> None:
    """`output_dir` is emptied before a run, so it must be a path inside the work directory."""
    value = (data.get("test_data") or {}).get(OUTPUT_DIR)
    if value is not None and not _is_inside_work(str(value)):
        line = line_of(path, ["test_data", OUTPUT_DIR], text)
        raise DataFileError(
            f"{path}:{line}: test_data.output_dir {value!r} must be a relative path inside the work directory"
        )


def _is_inside_work(value: str) -> bool:
    # Lexical: the directory does not exist yet. `.` would name the work directory itself (emptying it
    # would delete the staged data and scripts); a `$` is a ${variable}, substituted later into a path not checked.
    return paths.is_relative_inside(value) and "$" not in value


def _scalars(data: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Top-level scalars are variables; their values may use each other (`${version}`)."""
    raw = {
        str(k): _scalar_text(v)
        for k, v in data.items()
        if k not in _RESERVED and isinstance(v, (str, int, float)) and not isinstance(v, bool)
    }
    return tuple((k, substitute(v, raw)) for k, v in raw.items())


def _scalar_text(value: Any) -> str:
    # YAML reads `version: 1.0` as a float; str() gives what their runner substitutes.
    return str(value)


def _env_setup(data: Mapping[str, Any]) -> str | None:
    lines = []
    env = data.get("env")
    if isinstance(env, dict):
        lines += [f'export {k}="{v}"' for k, v in env.items()]  # as their runner writes them
    if data.get("env_setup"):
        lines.append(str(data["env_setup"]))
    return "\n".join(lines) or None


def _script_runner(data: Mapping[str, Any]) -> str | None:
    if data.get("script_runner"):
        return str(data["script_runner"])
    runtime = data.get("matlab_runtime") or {}
    if runtime.get("runner"):
        return f"{runtime['runner']} {runtime.get('path', '')}".strip()
    return None


def _script_ext(data: Mapping[str, Any]) -> str:
    if data.get("script_runner"):
        return str(data.get("script_ext", ".sh"))
    if (data.get("matlab_runtime") or {}).get("runner"):
        return ".m"
    return str(data.get("script_ext", ".sh"))


# --------------------------------------------------------------------------- substitute


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """Replace `${name}` and whole-word `$name` for every known variable; unknown ones stay for the shell."""
    if not text or not variables:
        return text
    pattern = re.compile(
        r"\$(?:\{("
        + "|".join(map(re.escape, variables))
        + r")\}|("
        + "|".join(map(re.escape, variables))
        + r")(?![A-Za-z0-9_]))"
    )
    for _ in range(_SUBSTITUTION_ROUNDS):
        result = pattern.sub(lambda m: variables[m.group(1) or m.group(2)], text)
        if result == text:
            break
        text = result
    return text


# --------------------------------------------------------------------------- plan


def plan_suite(suite: Suite, work_dir: Path, *, tags: Sequence[str] = ()) -> SuitePlan:
    """Bind `suite` to `work_dir` (absolute): variables, scripts and checks, all substituted.

    `tags` keeps only tests carrying one of them (and the tests they depend on).
    """
    work_dir = Path(work_dir).absolute()
    data_dir = work_dir / suite.data_name if suite.required_files else work_dir
    variables: dict[str, str] = {}
    for key, value in suite.test_data:
        if key == OUTPUT_DIR:
            variables[key] = str(work_dir / value)
        else:
            variables[key] = value if PurePosixPath(value).is_absolute() else str(data_dir / value)
    for key, value in suite.scalars:
        variables.setdefault(key, value)
    setup = "\n".join(s for s in (suite.host_script, suite.setup_script) if s)
    return SuitePlan(
        suite=suite,
        work_dir=work_dir,
        data_dir=data_dir,
        variables=tuple(variables.items()),
        setup=substitute(setup, variables) or None,
        cleanup=substitute(suite.cleanup_script or "", variables) or None,
        tests=tuple(_plan_test(i, t, suite, work_dir, variables) for i, t in enumerate(select(suite.tests, tags), 1)),
    )


def select(tests: Sequence[SuiteTest], tags: Sequence[str]) -> tuple[SuiteTest, ...]:
    """Tests with one of `tags` plus everything they depend on (all tests when no tags)."""
    if not tags:
        return tuple(tests)
    wanted = {t.name for t in tests if set(t.tags) & set(tags)}
    for test in reversed(tests):  # depends_on only names earlier tests (checked on load)
        if test.name in wanted:
            wanted.update(test.depends_on)
    return tuple(t for t in tests if t.name in wanted)


def _plan_test(index: int, test: SuiteTest, suite: Suite, work_dir: Path, variables: Mapping[str, str]) -> PlannedTest:
    env_setup = substitute(test.env_setup if test.env_setup is not None else suite.env_setup or "", variables)
    extra_path = extra = None
    if test.command is not None:
        command = substitute(test.command, variables)
    else:  # a `script:` test: its text is saved as a file, which the command runs (as their runner does)
        extra = substitute(test.script or "", variables)
        extra_path = work_dir / f"{SCRIPT_PREFIX}{index}-script{suite.script_ext}"
        command = f"{suite.script_runner} {extra_path}" if suite.script_runner else str(extra_path)
    outputs = tuple(substitute(v.args[0], variables) for v in test.validate if v.kind == "output_exists")
    dims = tuple(
        (substitute(v.args[0], variables), substitute(v.args[1], variables))
        for v in test.validate
        if v.kind == "same_dimensions"
    )
    return PlannedTest(
        test=test,
        script="#!/usr/bin/env bash\n" + (env_setup + "\n" if env_setup else "") + command + "\n",
        script_path=work_dir / f"{SCRIPT_PREFIX}{index}.sh",
        extra_script=extra,
        extra_path=extra_path,
        timeout=test.timeout or suite.default_timeout,
        expected_output=tuple(e for e in (substitute(x, variables) for x in test.expected_output_contains) if e),
        outputs=outputs,
        same_dimensions=dims,
    )
