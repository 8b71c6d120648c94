"""Issue 17, finding 6: U+2028 (and every other str.splitlines boundary) in a single-line value.

A workdir/env/label value holding U+2028 passed steps.check_line; defbuild's
parser split the rendered definition with str.splitlines, so the value opened a
`%files` section whose sources were not contained: any host file went into the
image.  Now: such values are refused, definitions split on \\n only (as
Apptainer's bufio.ScanLines), and %files sources stay inside the context.
"""

from __future__ import annotations

import json
import re

import pytest

from neurodocker_nd.build import apptainer as defbuild
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.render import steps as st
from neurodocker_nd.render.recipe import load_recipe
from support import RECIPE_HEAD, run_ndgen

SEPARATORS = [chr(i) for i in range(0x110000) if len(f"a{chr(i)}b".splitlines()) > 1]

HEAD = RECIPE_HEAD


def test_the_refused_set_is_every_boundary_splitlines_knows():
    assert set(st.LINE_BREAKS) == set(SEPARATORS)


@pytest.mark.parametrize("sep", SEPARATORS, ids=[f"U+{ord(c):04X}" for c in SEPARATORS])
@pytest.mark.parametrize("directive", ["workdir: {v}", "user: {v}", "environment: {{A: {v}}}"])
def test_a_recipe_value_with_a_line_separator_is_refused(tmp_path, sep, directive):
    value = json.dumps(f"/a{sep}%files{sep}/etc/shadow")  # YAML double-quoted: escapes survive as characters
    (tmp_path / "build.yaml").write_text(HEAD + f"    - {directive.format(v=value)}\n")
    with pytest.raises(NdgenError, match=rf"build\.yaml:9: .* contains {re.escape(st.describe_char(sep))}"):
        load_recipe(tmp_path)


@pytest.mark.parametrize("sep", SEPARATORS, ids=[f"U+{ord(c):04X}" for c in SEPARATORS])
def test_a_label_or_env_step_with_a_line_separator_is_refused(sep):
    value = f"/a{sep}%files{sep}/etc/shadow"
    for step in (st.Label, st.Env):
        with pytest.raises(st.StepError, match=re.escape(st.describe_char(sep))):
            step({"x": value})


@pytest.mark.parametrize("flag", ["--workdir", "--env", "--label", "--user", "--run"])
def test_a_directive_flag_with_u2028_is_one_error_line(tmp_path, flag):
    value = "/a\u2028%files\u2028/etc/shadow"
    arg = value if flag in ("--workdir", "--user", "--run") else f"A={value}"
    out = tmp_path / "x.def"
    proc = run_ndgen(flag, arg, "--os", "debian", "--format", "singularity", "-o", str(out), timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "a line separator (U+2028)" in proc.stderr, proc.stderr
    assert not out.exists()


def test_parse_definition_splits_on_newline_only():
    text = "Bootstrap: docker\nFrom: debian:bookworm\n%post\nmkdir -p /a\u2028%files\u2028/etc/shadow\n"
    d = defbuild.parse_definition(text)
    assert [s.name for s in d.sections] == ["post"]
    assert d.body("post") == "mkdir -p /a\u2028%files\u2028/etc/shadow"
    for sep in ("\x85", "\u2029", "\v", "\f", "\x1c"):
        assert [s.name for s in defbuild.parse_definition(text.replace("\u2028", sep)).sections] == ["post"]
    # CRLF files still parse (bufio.ScanLines drops one \r)
    assert [s.name for s in defbuild.parse_definition(text.replace("\n", "\r\n")).sections] == ["post"]


@pytest.mark.parametrize("source", ["/etc/hostname", "../../../../../../../../etc/hostname", "link"])
def test_files_sources_stay_inside_the_context(tmp_path, source):
    (tmp_path / "link").symlink_to("/etc/hostname")
    d = defbuild.parse_definition(f"Bootstrap: docker\nFrom: debian:bookworm\n%files\n{source} /x\n")
    with pytest.raises(NdgenError, match=rf"%files source {source} is outside the build context"):
        defbuild.translate(d, files_root=tmp_path)


def test_files_inside_the_context_still_translate(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("a")
    (tmp_path / "b").symlink_to("sub/a.txt")
    d = defbuild.parse_definition("Bootstrap: docker\nFrom: debian:bookworm\n%files\nsub/a.txt /a\nb /b\n")
    sources = [f.source for f in defbuild.translate(d, files_root=tmp_path).context.files if f.source is not None]
    assert sources == [(tmp_path / "sub" / "a.txt").resolve()] * 2
