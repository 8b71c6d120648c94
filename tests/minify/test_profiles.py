"""Minify profiles: schema, loader errors, and one shipped profile per buildable registry entry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from neurodocker_nd.core import paths
from neurodocker_nd.core.yamlfile import read_yaml
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.minify.profile import Profile, list_profiles, load_profile

SHIPPED = list_profiles()


def test_profiles_are_shipped():
    assert {"mrtrix3", "dcm2niix", "dcmtk", "minc-tools", "nibabel", "connectome_workbench"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_is_valid(name):
    profile = load_profile(name)
    assert profile.name == name and profile.commands
    assert profile.apt, "a shipped profile names its reference image's Debian packages"
    # Inputs live in scratch mounts, so every profile that writes data declares one.
    assert profile.mounts


def test_every_buildable_registry_entry_has_a_profile():
    buildable = []
    for meta in sorted(paths.registry_dir().glob("*/meta.yaml")):
        data = read_yaml(meta) or {}
        if (data.get("system") or {}).get("apt"):
            buildable.append(meta.parent.name)
    assert set(buildable) <= set(SHIPPED), f"no profile for {sorted(set(buildable) - set(SHIPPED))}"


def test_profile_by_path_and_defaults(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text('name: tiny\ndescription: one line\ncommands: ["true"]\n')
    profile = load_profile(str(path))
    assert profile == Profile(name="tiny", description="one line", commands=("true",))
    assert profile.path == path


def _error(tmp_path: Path, text: str, name: str = "bad") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    with pytest.raises(NdgenError) as info:
        load_profile(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_malformed_yaml_names_file_and_line(tmp_path):
    message = _error(tmp_path, "name: bad\ndescription: x\ncommands: [a, b\n")
    assert "malformed YAML" in message and "bad.yaml:4" in message


def test_schema_violation_names_the_yaml_path(tmp_path):
    message = _error(tmp_path, "name: bad\ndescription: x\ncommands:\n  - ok\n  - [not, a, string]\n")
    assert "commands[1]" in message and ":5:" in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: bad\ndescription: x\n", "'commands' is a required property"),
        ("name: bad\ndescription: x\ncommands: []\n", "commands"),
        ("name: bad\ndescription: x\ncommands: [a]\nkeep: [relative/path]\n", "keep[0]"),
        ("name: bad\ndescription: x\ncommands: [a]\nmounts: ['/a:/b']\n", "mounts[0]"),
        ("name: bad\ndescription: x\ncommands: [a]\nextra: 1\n", "extra"),
        ("name: other\ndescription: x\ncommands: [a]\n", "must equal the file name"),
    ],
)
def test_schema_rules(tmp_path, text, needle):
    assert needle in _error(tmp_path, text)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(NdgenError, match=r"unknown profile 'nope' \(known: .*mrtrix3"):
        load_profile("nope")
    with pytest.raises(NdgenError, match="profile file not found"):
        load_profile("/nonexistent/x.yaml")


def test_schema_is_valid_draft_2020_12():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--check-metaschema",
            str(paths.schemas_dir() / "profile.schema.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
