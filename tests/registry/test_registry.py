"""Registry loading and validation: neurodocker's schema, ndgen's meta schema, error locations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from neurodocker_nd.core.paths import registry_dir, schemas_dir
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.registry.entries import Registry, RegistryError, sort_versions, validate_paths
from support import TESTS

FIXTURES = TESTS / "golden" / "registry"


def copy_fixture(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / "registry" / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


@pytest.mark.parametrize(
    "versions, newest",
    [
        (["2.9", "2.10", "2.12.1", "latest"], "2.12.1"),
        (["v1.0.20241211", "v1.0.20250506", "latest", "v1.0.20240202"], "v1.0.20250506"),
        (["12.9_R2023b", "r1933_R2017b", "r2166_R2017b"], "12.9_R2023b"),
        (["r7487", "r7771", "r6914"], "r7771"),
        (["1.2.0-rc1", "1.2.0", "1.1.9"], "1.2.0"),
        (["1.2.0-a", "1.2.0-b", "1.1.0"], "1.2.0-b"),
        (["nightly", "1.0.0"], "1.0.0"),
        (["latest"], "latest"),
        (["2023a", "2023b", "2022b"], "2023b"),
    ],
)
def test_version_sort(versions, newest):
    assert sort_versions(versions)[0] == newest


def test_upstream_templates_come_from_installed_neurodocker(tmp_path):
    import neurodocker

    reg = Registry(registry_dir=tmp_path)
    assert reg.upstream_dir == Path(neurodocker.__file__).parent / "templates"
    names = reg.names()
    assert len(names) == 20 and "ants" in names and "_default" not in names
    ants = reg.get("ants")
    assert ants.source == "upstream" and ants.meta is None
    assert ants.methods == ("binaries", "source")


def test_only_requested_entries_are_read(tmp_path, monkeypatch):
    reg = Registry(registry_dir=tmp_path)
    read: list[str] = []
    original = Registry.load_template

    def spy(self, path, *args, **kwargs):
        read.append(Path(path).stem)
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(Registry, "load_template", spy)
    reg.get("ants")
    reg.get("ants")
    assert read == ["ants"]


def test_sources_and_methods_with_fixture_registry():
    reg = Registry(registry_dir=FIXTURES)
    assert reg.get("jq").source == "both"
    assert reg.get("jq").methods == ("binaries", "source", "system")
    assert reg.get("hello").source == "registry"
    assert reg.get("tinytool").methods == ("system",)
    assert reg.get("tinytool").pkg_managers("system") == {"apt", "yum"}


def test_registry_template_overrides_upstream(tmp_path):
    entry = copy_fixture(tmp_path, "hello")
    text = (entry / "template.yaml").read_text().replace("name: hello", "name: jq")
    (tmp_path / "registry" / "jq").mkdir()
    (tmp_path / "registry" / "jq" / "template.yaml").write_text(text)
    meta = (entry / "meta.yaml").read_text().replace("name: hello", "name: jq")
    (tmp_path / "registry" / "jq" / "meta.yaml").write_text(meta)
    jq = Registry(registry_dir=tmp_path / "registry").get("jq")
    assert jq.source == "both" and jq.versions()[0] == "2.12.1"


def test_meta_schema_violation_names_file_path_and_line(tmp_path):
    entry = copy_fixture(tmp_path, "tinytool")
    meta = entry / "meta.yaml"
    meta.write_text(meta.read_text().replace("commands: [dcmdump]", "commands: []"))
    with pytest.raises(RegistryError) as exc:
        Registry(registry_dir=tmp_path / "registry").get("tinytool")
    line = next(i for i, text in enumerate(meta.read_text().splitlines(), 1) if text.startswith("commands"))
    assert exc.value.message.startswith(f"{meta}:{line}: commands: ")
    assert "ndgen meta schema" in exc.value.message


def test_meta_nested_violation_points_at_the_item(tmp_path):
    entry = copy_fixture(tmp_path, "tinytool")
    meta = entry / "meta.yaml"
    meta.write_text(meta.read_text().replace("yum: [dcmtk]", "yum:\n    - dcmtk\n    - 'bad name;'"))
    line = meta.read_text().splitlines().index("    - 'bad name;'") + 1
    with pytest.raises(RegistryError, match=rf"{meta}:{line}: system\.yum\[1\]: 'bad name;' does not match"):
        Registry(registry_dir=tmp_path / "registry").get("tinytool")


def test_template_schema_violation_uses_neurodocker_schema(tmp_path):
    entry = copy_fixture(tmp_path, "hello")
    tpl = entry / "template.yaml"
    tpl.write_text(tpl.read_text().replace("  instructions: |", "  instructionz: |"))
    line = tpl.read_text().splitlines().index("binaries:") + 1
    with pytest.raises(
        RegistryError,
        match=rf"{tpl}:{line}: binaries: 'instructions' is a required property \(neurodocker template schema\)",
    ):
        Registry(registry_dir=tmp_path / "registry").get("hello")


def test_malformed_yaml_names_line(tmp_path):
    entry = copy_fixture(tmp_path, "hello")
    (entry / "meta.yaml").write_text("name: hello\ncommands: [hello\ntest: x\n")
    with pytest.raises(RegistryError, match=rf"{entry / 'meta.yaml'}:3: malformed YAML"):
        Registry(registry_dir=tmp_path / "registry").get("hello")


def test_name_must_match_directory(tmp_path):
    entry = copy_fixture(tmp_path, "hello")
    (entry / "meta.yaml").write_text((entry / "meta.yaml").read_text().replace("name: hello", "name: howdy"))
    with pytest.raises(RegistryError, match=r"meta.yaml:1: name: 'howdy' must be 'hello'"):
        Registry(registry_dir=tmp_path / "registry").get("hello")


def test_entry_without_meta_is_an_error(tmp_path):
    entry = copy_fixture(tmp_path, "hello")
    (entry / "meta.yaml").unlink()
    with pytest.raises(RegistryError, match="has no meta.yaml"):
        Registry(registry_dir=tmp_path / "registry").get("hello")


def test_validate_paths_checks_user_files(tmp_path):
    reg = Registry(registry_dir=tmp_path)
    assert len(validate_paths([FIXTURES / "hello"], reg)) == 2
    mine = tmp_path / "mytool.yaml"
    mine.write_text("name: mytool\nurl: x\nbinaries:\n  urls: {}\n")
    with pytest.raises(RegistryError, match=rf"{mine}:3: binaries: 'instructions' is a required property"):
        validate_paths([mine], reg)
    with pytest.raises(RegistryError, match="no such file"):
        validate_paths([tmp_path / "nope.yaml"], reg)


def test_meta_schema_is_valid_json_schema():
    schema = json.loads((schemas_dir() / "meta.schema.json").read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)


def test_fixture_metas_follow_the_schema():
    schema = json.loads((schemas_dir() / "meta.schema.json").read_text())
    metas = sorted(FIXTURES.glob("*/meta.yaml"))
    assert [m.parent.name for m in metas] == ["hello", "jq", "tinytool"]
    for meta in metas:
        jsonschema.validate(yaml.safe_load(meta.read_text()), schema)  # raises naming the field
    # ... and the loader reads each one as that entry's meta.
    reg = Registry(registry_dir=FIXTURES)
    for meta in metas:
        entry = reg.get(meta.parent.name)
        assert entry.meta_path == meta and entry.meta is not None and entry.meta.commands


def test_project_registry_is_valid():
    """Every committed registry entry validates (template + meta) and renders."""
    from neurodocker_nd.maintain.matrix import check_renders

    reg = Registry(registry_dir=registry_dir())
    entries = [reg.get(n) for n in reg.names()]
    ours = [e for e in entries if e.source != "upstream"]
    for e in ours:
        assert e.meta is not None and e.meta.commands and e.meta.test
        assert yaml.safe_load(e.meta_path.read_text())["name"] == e.name
    check_renders(reg, ours)


def test_unknown_name_is_ndgen_error(tmp_path):
    with pytest.raises(NdgenError, match="did you mean: fsl"):
        Registry(registry_dir=tmp_path).get("fsll")


def test_unquoted_float_version_is_reported(tmp_path):
    entry = copy_fixture(tmp_path, "hello")
    tpl = entry / "template.yaml"
    tpl.write_text(tpl.read_text().replace('"2.9":', "2.9:"))
    line = tpl.read_text().splitlines().index("    2.9: https://ftp.gnu.org/gnu/hello/hello-2.9.tar.gz") + 1
    with pytest.raises(
        RegistryError, match=rf"{tpl}:{line}: binaries\.urls\.2\.9: version 2\.9 is not a string; quote it"
    ):
        Registry(registry_dir=tmp_path / "registry").get("hello")


def test_non_mapping_yaml_is_a_schema_error(tmp_path):
    entry = copy_fixture(tmp_path, "hello")
    (entry / "meta.yaml").write_text("- just\n- a list\n")
    with pytest.raises(RegistryError, match=r"meta.yaml:1: \(top level\): \[.*\] is not of type 'object'"):
        Registry(registry_dir=tmp_path / "registry").get("hello")
