"""Every shipped profile, run for real: its reference image, setup, and the traced workload.

Each profile runs twice from scratch; the workload must succeed and be
deterministic (same stdout, same output files), because minify's verify step
compares a rerun in the minified image against the traced run.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from pathlib import Path

import pytest

from neurodocker_nd.minify.profile import ensure_reference_image, list_profiles, load_profile, run_setup, scratch_mounts
from neurodocker_nd.minify.ptrace import PtraceTracer
from support import apt_proxy, remove_images, unique_tag

pytestmark = [pytest.mark.docker, pytest.mark.slow]


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
def reference_image(docker_client, base_image, request):
    profile = load_profile(request.param)
    tag = unique_tag(f"ndgen-test-profile-{profile.name.replace('_', '-')}")
    # On the suite's base image; a kept earlier image makes the build a layer-cache hit.
    proxy = apt_proxy()
    ensure_reference_image(docker_client, tag, profile.apt, base=base_image, apt_proxy=proxy)
    if proxy is not None:  # the apt cache served the build and left no trace in the image
        image = docker_client.images.get(tag)
        kept = json.dumps([image.attrs["Config"], image.history()])
        assert proxy.url not in kept and "http_proxy" not in kept.lower(), kept[:500]
    yield profile, tag
    remove_images(docker_client, [tag])


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
