"""Rendering a template whose instructions rely on something gone says so (issue 22).

neurodocker's neurodebian template adds NeuroDebian's APT key from a Dropbox
link with apt-key and refreshes it from the SKS keyserver pool: on Debian trixie
(no apt-key) as everywhere (Dropbox answers 403) the build fails, which a user
should learn from the render, as for `--pkg ants==2.3.4`'s Dropbox download.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from neurodocker_nd.maintain.gone import gone_instruction_notes
from neurodocker_nd.registry.entries import Registry
from neurodocker_nd.render.renderer import render_recipe
from support import confirmed_versions, run_ndgen

APT_KEY = "apt-key (removed from apt in Debian trixie)"
DROPBOX = "a Dropbox download (Dropbox answers 403, neurodocker#635)"
SKS = "the keyserver pool.sks-keyservers.net (shut down in 2021)"


@pytest.mark.parametrize("os_name", ["debian:trixie", "ubuntu:22.04"])
def test_neurodebian_render_says_its_key_setup_is_gone(os_name):
    proc = run_ndgen("--pkg", "neurodebian", "--os", os_name)
    assert proc.returncode == 0 and "apt-key add" in proc.stdout  # still rendered, as neurodocker does
    assert (
        proc.stderr
        == f"ndgen: note: neurodebian: its instructions use {APT_KEY}, {DROPBOX} and {SKS}: the build will fail\n"
    )


def test_a_template_without_them_gets_no_note():
    proc = run_ndgen("--pkg", "jq,method=system", "--os", "debian:trixie")
    assert (proc.returncode, proc.stderr) == (0, "")


def _entry(reg: Path, instructions: str) -> None:
    entry = reg / "keytool"
    entry.mkdir(parents=True)
    (entry / "template.yaml").write_text(
        "name: keytool\nurl: https://example.org/keytool\nbinaries:\n  arguments:\n    required: [version]\n"
        '  urls:\n    "1.0": https://example.org/keytool-1.0\n  instructions: |\n'
        + "".join(f"    {line}\n" for line in instructions.splitlines())
    )
    (entry / "meta.yaml").write_text(
        'name: keytool\ndescription: "key test entry"\nhomepage: https://example.org/keytool\n'
        'commands: [keytool]\ntest: "true"\nupstream:\n  status: new\n' + confirmed_versions(["1.0"])
    )


@pytest.mark.parametrize(
    "instructions, note",
    [
        ("curl -fsSL https://example.org/key.asc | apt-key add -", f"{APT_KEY}: the build may fail"),
        ("curl -fL -o /tmp/x https://www.dropbox.com/s/abc/x.bin", f"{DROPBOX}: the build will fail"),
        ("gpg --keyserver hkp://pool.sks-keyservers.net --recv-keys 0x1", f"{SKS}: the build may fail"),
        ("curl -fL -o /tmp/x https://example.org/notdropbox.com/x.bin", None),
    ],
)
def test_each_gone_thing_is_named(tmp_path, instructions, note):
    _entry(tmp_path / "reg", instructions)
    registry = Registry(registry_dir=tmp_path / "reg")
    recipe = render_recipe(["keytool"], os_name="debian:bookworm", registry=registry)
    expected = [f"keytool: its instructions use {note}"] if note else []
    assert gone_instruction_notes(recipe.packages, registry) == expected
