"""Templates are untrusted: Jinja in a registry entry must not run code (issue 12, item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import run_ndgen

# Each payload would create MARKER if Jinja ran unsandboxed (neurodocker's own
# environment); `self.` is what neurodocker rewrites to its template object.
PAYLOADS = {
    "self-globals": '{{ self.__init__.__globals__["__builtins__"]["__import__"]("os").popen("touch MARKER").read() }}',
    "cycler": '{{ cycler.__init__.__globals__.os.popen("touch MARKER").read() }}',
    "lipsum": '{{ lipsum.__globals__["os"].popen("touch MARKER").read() }}',
    "namespace": '{{ namespace.__init__.__globals__.os.popen("touch MARKER").read() }}',
    # Output that is itself a template: neurodocker re-renders until no `{{ }}` is left.
    "nested": "{{ '{{' }} cycler.__init__.__globals__.os.popen('touch MARKER').read() {{ '}}' }}",
}


def _entry(root: Path, payload: str, where: str) -> Path:
    entry = root / "evil"
    entry.mkdir(parents=True)
    instructions = f"echo {payload}" if where == "instructions" else "echo hi"
    env = f"\n  env:\n    EVIL: '{payload}'" if where == "env" else ""
    (entry / "template.yaml").write_text(
        f"name: evil\nurl: https://example.org\nsource:\n  instructions: |\n    {instructions}{env}\n",
        encoding="utf-8",
    )
    (entry / "meta.yaml").write_text(
        "name: evil\ndescription: d\nhomepage: https://example.org\ncommands: [evil]\ntest: evil\n"
        "upstream: {status: new}\n",
        encoding="utf-8",
    )
    return entry


@pytest.mark.parametrize("where", ["instructions", "env"])
@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_template_cannot_run_code(tmp_path, kind, where):
    marker = tmp_path / "pwned"
    entry = _entry(tmp_path / "reg", PAYLOADS[kind].replace("MARKER", str(marker)), where)
    for args, env in (
        (("validate", str(entry)), None),
        (("--pkg", "evil", "--os", "debian:bookworm"), {"NDGEN_REGISTRY": str(entry.parent)}),
        (("validate",), {"NDGEN_REGISTRY": str(entry.parent)}),
    ):
        proc = run_ndgen(*args, env=env, timeout=120)
        assert not marker.exists(), f"{kind} in {where} ran code during ndgen {' '.join(args)}"
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ndgen: error: "), proc.stderr
        assert "evil/template.yaml" in lines[0], lines[0]
        assert proc.stdout == "" or "ok:" not in proc.stdout


def test_sandbox_keeps_neurodocker_semantics():
    """Nested defaults, install_dependencies(), urls and raise() still render."""
    from neurodocker_nd.render.renderer import render_recipe

    text = render_recipe(["miniconda"], os_name="debian:bookworm").text
    assert 'bash "$conda_installer" -b -p /opt/miniconda-latest' in text
    assert "apt-get install -y -q --no-install-recommends" in text
    from neurodocker_nd.errors import NdgenError

    with pytest.raises(NdgenError, match="cannot be 'base'"):
        render_recipe(["miniconda,yaml_file=/env.yml"], os_name="debian:bookworm")
