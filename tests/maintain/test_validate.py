"""maintain.validate without the CLI: what a clean validation counts."""

from __future__ import annotations

import shutil
from pathlib import Path

from neurodocker_nd.maintain.validate import validate_files
from neurodocker_nd.registry.entries import Registry
from support import REPO


def test_an_entry_directory_is_schema_checked_rendered_and_linted(tmp_path):
    shutil.copytree(REPO / "registry" / "jq", tmp_path / "jq")
    done = validate_files([tmp_path / "jq"], Registry(registry_dir=tmp_path))
    assert done.files == 2  # template.yaml and meta.yaml
    assert done.renders > 0 and done.entries is None


def test_a_file_alone_is_only_schema_checked(tmp_path):
    (tmp_path / "jq").mkdir()
    meta = Path(shutil.copy(REPO / "registry" / "jq" / "meta.yaml", tmp_path / "jq" / "meta.yaml"))
    done = validate_files([meta], Registry())
    assert (done.files, done.renders, done.waived) == (1, 0, 0)
