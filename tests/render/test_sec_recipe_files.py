"""Issue 17, findings 4 and 5: a hostile recipe directory must not stage a host file.

4. `files: url: /etc/hostname` was taken as a host path and copied into the
   build context (and the image): `url:` is http(s) only, file:line errors.
5. A README.md symlink to a host file landed in /README.md and %help; every
   file the loader reads from a recipe tree (build.yaml, README.md, includes,
   copy:/file: sources) goes through one contained, regular-file, capped reader.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from neurodocker_nd.core import paths
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.render.recipe import load_recipe
from neurodocker_nd.render.renderer import render
from support import run_ndgen

HEAD = """name: r
version: "1"
{readme}build:
  kind: neurodocker
  base-image: debian:bookworm
  add-default-template: false
  directives:
    - run: [echo hi]
"""


def _recipe(root: Path, *, readme: bool = True, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "build.yaml").write_text(HEAD.format(readme="readme: hi\n" if readme else "") + extra)
    return root


def _line_of(recipe: Path, needle: str) -> int:
    return next(i for i, ln in enumerate((recipe / "build.yaml").read_text().splitlines(), 1) if needle in ln)


# ---------------------------------------------------------------- finding 4


@pytest.mark.parametrize(
    "url", ["/etc/hostname", "file:///etc/hostname", "../../etc/hostname", "ftp://example.org/x", "http:/etc/hostname"]
)
def test_a_file_url_that_is_not_http_is_refused_with_file_and_line(tmp_path, url):
    recipe = _recipe(tmp_path / "r", extra=f"files:\n  - name: host\n    url: {url}\n")
    with pytest.raises(NdgenError) as exc:
        load_recipe(recipe)
    line = _line_of(recipe, "url:")
    assert exc.value.message.startswith(f"{recipe / 'build.yaml'}:{line}: file 'host': url "), exc.value.message
    assert "is not an http(s) URL" in exc.value.message


def test_ndgen_recipe_out_never_stages_a_host_file_named_by_url(tmp_path):
    """The whole CLI path of the audit: nothing is written, one line names build.yaml:LINE."""
    recipe = _recipe(tmp_path / "r", extra="files:\n  - name: host\n    url: /etc/hostname\n")
    (recipe / "build.yaml").write_text(
        (recipe / "build.yaml").read_text().replace("    - run: [echo hi]\n", "    - copy: host /host\n")
    )
    out = tmp_path / "out"
    proc = run_ndgen("recipe", str(recipe), "--out", str(out), timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.rstrip("\n")]
    assert proc.stderr.startswith(f"ndgen: error: {recipe / 'build.yaml'}:{_line_of(recipe, 'url:')}: ")
    assert not out.exists()


def test_an_http_url_is_still_a_download(tmp_path):
    recipe = _recipe(tmp_path / "r", extra="files:\n  - name: tool\n    url: https://example.org/dl/tool.tar.gz\n")
    plan = load_recipe(recipe)
    assert (
        plan.file("tool").url == "https://example.org/dl/tool.tar.gz"
        and plan.file("tool").guest_filename == "tool.tar.gz"
    )


# ---------------------------------------------------------------- finding 5


def test_a_readme_symlink_to_a_host_file_is_refused(tmp_path):
    recipe = _recipe(tmp_path / "r", readme=False)
    (recipe / "README.md").symlink_to("/etc/hostname")
    with pytest.raises(NdgenError, match=r"README\.md: a symlink to /etc/hostname, outside the directory"):
        load_recipe(recipe)
    (recipe / "README.md").unlink()
    (recipe / "README.md").symlink_to("../../../../../../../../etc/hostname")  # relative, climbing out
    with pytest.raises(NdgenError, match=r"README\.md: leads outside the directory"):
        load_recipe(recipe)


def test_a_readme_symlink_inside_the_recipe_still_works(tmp_path):
    recipe = _recipe(tmp_path / "r", readme=False)
    (recipe / "docs").mkdir()
    (recipe / "docs" / "about.md").write_text("## r ##\nabout r\n")
    (recipe / "README.md").symlink_to("docs/about.md")
    plan = load_recipe(recipe)
    assert plan.readme.startswith("## r ##") and "about r" in render(plan, "singularity")


def _refused_without_hanging(recipe: Path, message: str) -> None:
    """load_recipe in a thread: a FIFO read would block forever, so a join timeout is the verdict."""
    result: list[BaseException | None] = []

    def load() -> None:
        try:
            load_recipe(recipe)
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        # Unblock the reader so the daemon thread ends, then fail.
        fd = os.open(next(p for p in recipe.iterdir() if p.is_fifo()), os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("the loader blocked on a FIFO")
    assert isinstance(result[0], NdgenError) and message in result[0].message, result


def test_a_fifo_readme_is_refused_not_skipped_or_read(tmp_path):
    recipe = _recipe(tmp_path / "r", readme=False)
    os.mkfifo(recipe / "README.md")
    _refused_without_hanging(recipe, "README.md: not a regular file (a FIFO)")


def test_build_yaml_itself_must_be_a_contained_regular_file(tmp_path):
    outside = _recipe(tmp_path / "elsewhere")
    recipe = tmp_path / "r"
    recipe.mkdir()
    (recipe / "build.yaml").symlink_to(outside / "build.yaml")
    with pytest.raises(NdgenError, match=r"build\.yaml: a symlink to .*, outside the directory"):
        load_recipe(recipe)
    (recipe / "build.yaml").unlink()
    os.mkfifo(recipe / "build.yaml")
    for given in (recipe, recipe / "build.yaml"):
        with pytest.raises(NdgenError, match=r"build\.yaml: not a regular file \(a FIFO\)"):
            load_recipe(given)


def test_an_oversized_readme_is_refused(tmp_path):
    recipe = _recipe(tmp_path / "r", readme=False)
    with open(recipe / "README.md", "wb") as fh:
        fh.truncate(paths.MAX_RECIPE_TEXT + 1)  # sparse: no disk
    with pytest.raises(NdgenError, match=r"README\.md: \d+ bytes, larger than"):
        load_recipe(recipe)


def test_an_include_linking_out_of_the_repository_is_refused(tmp_path):
    root = tmp_path / "repo"
    (root / "macros").mkdir(parents=True)
    (tmp_path / "host.yaml").write_text("directives:\n  - run: [echo host-file]\n")
    (root / "macros" / "x.yaml").symlink_to(tmp_path / "host.yaml")
    recipe = _recipe(root / "recipes" / "r", extra="    - include: macros/x.yaml\n")
    with pytest.raises(NdgenError, match=r"include 'macros/x.yaml' not found under .*outside the directory"):
        load_recipe(recipe)


def test_copy_and_file_sources_must_be_regular(tmp_path):
    recipe = _recipe(tmp_path / "r")
    os.mkfifo(recipe / "pipe")
    for extra, what in (
        ("    - copy: pipe /opt/\n", "copy source 'pipe'"),
        ("files:\n  - name: p\n    filename: pipe\n", "file 'p': filename 'pipe'"),
    ):
        text = HEAD.format(readme="readme: hi\n") + extra
        (recipe / "build.yaml").write_text(text)
        with pytest.raises(NdgenError, match=f"{what}: not a regular file \\(a FIFO\\)"):
            load_recipe(recipe)


def test_out_copies_only_what_the_loader_checked(tmp_path):
    """`--out`: build.yaml is the parsed text; a copied tree keeps its links as links
    (never read through) and no write follows a link out of the context."""
    recipe = _recipe(tmp_path / "r", extra="    - copy: tree /opt/tree\n")
    (recipe / "tree").mkdir()
    (recipe / "tree" / "a.sh").write_text("echo a\n")
    (recipe / "tree" / "host").symlink_to("/etc/hostname")
    out = tmp_path / "out"
    proc = run_ndgen("recipe", str(recipe), "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "tree" / "a.sh").read_text() == "echo a\n"
    assert os.readlink(out / "tree" / "host") == "/etc/hostname"  # a link in the image, not the host's bytes
    assert (out / "build.yaml").read_text() == (recipe / "build.yaml").read_text()
    os.mkfifo(recipe / "tree" / "pipe")
    out2 = tmp_path / "out2"
    proc = run_ndgen("recipe", str(recipe), "--out", str(out2), timeout=300)
    assert proc.returncode == 2 and "tree/pipe: not a regular file (a FIFO)" in proc.stderr, proc.stderr
    assert not out2.exists()
