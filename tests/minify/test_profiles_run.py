"""Every shipped profile, run for real: its reference image, setup, and the traced workload.

Each profile runs twice from scratch; the workload must succeed and be
deterministic (same stdout, same output files), because minify's verify step
compares a rerun in the minified image against the traced run.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
from pathlib import Path

import pytest

from neurodocker_nd.minify.profile import list_profiles, run_setup, scratch_mounts
from neurodocker_nd.minify.ptrace import PtraceTracer

pytestmark = [pytest.mark.docker, pytest.mark.slow]
# Each profile's test stands alone (its image is shared through the run-wide `profile_image`):
# pytest-xdist may spread them over its workers instead of keeping the file on one.
SPREAD_OVER_WORKERS = True


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def first_program(root: Path, command: str) -> str:
    """The first word of `command` that names a program in the image's /usr/bin (skipping `for n in …; do`)."""
    for word in shlex.split(command.replace(";", " ; ")):
        if word not in SHELL_WORDS and (root / "usr/bin" / word).is_file():
            return word
    raise AssertionError(f"no program of {root}/usr/bin in {command!r}")


# Reserved words that may name a program too (`test`, `[`): the command's real program comes later.
SHELL_WORDS = {"for", "in", "do", "done", "if", "then", "else", "fi", "while", "until", "!", "{", "}", "test", "["}


@pytest.fixture()
def reference_image(profile_image, request):
    return profile_image(request.param)  # once per run: test_minify_reference shares mrtrix3's


@pytest.mark.parametrize("reference_image", list_profiles(), indirect=True)
def test_profile_runs_and_is_deterministic(reference_image, docker_client, tmp_path):
    from neurodocker_nd.minify.source import open_source

    profile, tag = reference_image
    runs = []
    with open_source(docker_client, tag) as src:
        # A keep rule that matches nothing in the reference image is a typo.
        for rule in profile.keep:
            assert list(src.pristine.glob(rule.lstrip("/"))), f"keep {rule!r} matches nothing in {tag}"
        # Setup runs once; each run gets a fresh copy of its inputs, as verify does.
        inputs = scratch_mounts(profile, tmp_path / "inputs")
        run_setup(profile, src.view("setup"), src.config, inputs)
        for attempt in range(2):
            rootfs = src.view(f"run{attempt}")
            mounts = [m.with_host(tmp_path / f"run{attempt}" / m.host.name) for m in inputs]
            for mount, source in zip(mounts, inputs, strict=True):
                shutil.copytree(source.host, mount.host, symlinks=True)
            record = PtraceTracer().trace(rootfs, src.config, profile.commands, mounts)
            failed = record.failed
            assert failed is None, f"{failed.command!r} exited {failed.exit_code}: {failed.stderr.decode()[-500:]}"
            assert len(record.results) == len(profile.commands)
            # The program each command starts was traced, and is the image's own.
            for command in profile.commands:
                program = first_program(src.pristine, command)
                assert {f"/usr/bin/{program}", f"/bin/{program}"} & record.paths, f"{program} ({command!r}) not traced"
            runs.append(([(r.stdout, r.stderr) for r in record.results], [tree_digest(m.host) for m in mounts]))
    assert runs[0] == runs[1], "the workload is not deterministic: verify could never pass"
