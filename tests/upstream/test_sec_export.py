"""Issue 17, findings 7 and 20: the upstream export renders in the one sandbox and refuses
what `ndgen validate` refuses.

* 7: `upstream export --target neurocontainers` renders registry templates in ndgen's
  sandbox, so an SSTI payload runs nothing and leaks no token into the exported build.yaml;
* 20: both export targets refuse an entry `ndgen validate` refuses, before writing anything.
"""

from __future__ import annotations

import pytest

from support import entry as _entry
from support import one_error_line as _one_error_line
from support import run_ndgen
from support import timed as _timed

# ---------------------------------------------------------------- findings 7 and 20

SSTI = {
    # neurodocker's own Jinja sees `self.` as its template object: full Python.
    "self-globals": '{{ self.__init__.__globals__["__builtins__"]["__import__"]("os").popen("MARKER").read() }}',
    "cycler": '{{ cycler.__init__.__globals__.os.popen("MARKER").read() }}',
    "joiner": '{{ joiner.__init__.__globals__.os.popen("MARKER").read() }}',
    "mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
}


@pytest.mark.parametrize("kind", sorted(SSTI))
def test_neurocontainers_export_runs_no_template_code_and_refuses_the_entry(tmp_path, kind):
    marker = tmp_path / "pwned"
    # The command records who ran it and the token it could see, where the test can look.
    command = f"id > {marker}; echo $GITHUB_TOKEN >> {marker}; echo $GITHUB_TOKEN"
    _entry(tmp_path / "reg", SSTI[kind].replace("MARKER", command))
    out = tmp_path / "out"
    proc, _ = _timed(
        "upstream",
        "export",
        "--target",
        "neurocontainers",
        "--registry",
        str(tmp_path / "reg"),
        "--out",
        str(out),
        env={"GITHUB_TOKEN": "ghp_ndgenSecretTokenForTheTest"},
    )
    assert not marker.exists(), f"{kind}: the template ran a command during the export"
    _one_error_line(proc, "evil", "validate")
    assert "ghp_ndgenSecretTokenForTheTest" not in proc.stdout + proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.*")), "nothing may be written"


def test_neurocontainers_export_renders_in_the_sandbox_itself(tmp_path):
    """Defence in depth: the export's own renderer is the sandbox, whatever ran before it."""
    from neurodocker_nd.core.yamlfile import read_yaml
    from neurodocker_nd.errors import NdgenError
    from neurodocker_nd.upstream import neurocontainers

    marker = tmp_path / "pwned"
    path = _entry(tmp_path / "reg", SSTI["cycler"].replace("MARKER", f"touch {marker}")) / "template.yaml"
    with pytest.raises(NdgenError, match="evil: unsafe template"):
        neurocontainers._rendered("evil", read_yaml(path), "1.0")
    assert not marker.exists()


# What the bounded sandbox refuses (tests/render/test_sec_template_bounds.py has the full set):
# an in-process check, and one only the forked worker's deadline ends.
BOUNDED = {
    "power": "{{ 9**(9**9) }}",
    "shared-repr": "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = [ns.l, ns.l] %}"
    "{% endfor %}{{ ns.l }}",
}


@pytest.mark.parametrize("where", ["instructions", "env"])
@pytest.mark.parametrize("kind", sorted(BOUNDED))
def test_neurocontainers_export_renders_within_the_sandbox_bounds(tmp_path, kind, where):
    """The export's renderer is the bounded one too: a template the sandbox's size and time
    bounds refuse elsewhere ends here in seconds, as one error naming the entry."""
    import time

    from neurodocker_nd.core.yamlfile import read_yaml
    from neurodocker_nd.errors import NdgenError
    from neurodocker_nd.upstream import neurocontainers

    path = _entry(tmp_path / "reg", BOUNDED[kind], where) / "template.yaml"
    start = time.monotonic()
    with pytest.raises(NdgenError, match="^evil: template refused: "):
        neurocontainers._rendered("evil", read_yaml(path), "1.0")
    assert time.monotonic() - start < 30


def test_neurodocker_export_refuses_an_entry_validate_refuses(tmp_path):
    """On 157b632 upstream's renderer (in bubblewrap, so harmless there) accepted this SSTI
    template and the export wrote its series toward an upstream PR."""
    from support.upstream_fakes import AUTHOR_TEXT, write_registry

    reg = write_registry(tmp_path)
    marker = tmp_path / "pwned"
    _entry(reg, SSTI["cycler"].replace("MARKER", f"touch {marker}"), name="evil")
    refused = run_ndgen("validate", str(reg / "evil"), timeout=120)
    _one_error_line(refused, "evil")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous export\n")
    proc, _ = _timed("upstream", "export", "--registry", str(reg), "--out", str(out), "--author", AUTHOR_TEXT)
    _one_error_line(proc, "evil: not exported, `ndgen validate` refuses it")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert not marker.exists()
