"""`ndgen recipe`: neurocontainers' build.yaml → steps → Dockerfile / Singularity file.

Uses ndgen's own demo recipe (tests/recipes/ndgen-demo) and small recipes
written here; the comparison with neurocontainers' builder on their real
recipes is tests/test_recipe_corpus.py (needs NDGEN_NEUROCONTAINERS).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.maintain.equivalence import instructions
from neurodocker_nd.render import steps as st
from neurodocker_nd.render.recipe import load_recipe
from neurodocker_nd.render.renderer import render
from support import TESTS, run_ndgen

HERE = TESTS
DEMO = HERE / "recipes" / "ndgen-demo"


def test_demo_docker_order_and_final_environment():
    plan = load_recipe(DEMO, parallel_jobs=2)
    ins = instructions(render(plan, "docker"))
    kinds = [i.split()[0] for i in ins]
    assert ins[0] == "FROM debian:bookworm" and ins[1] == "USER root"
    # the order of USER / WORKDIR / COPY / ENTRYPOINT follows the recipe
    assert [k for k in kinds if k in ("USER", "WORKDIR", "COPY", "ENTRYPOINT")] == [
        "USER",
        "WORKDIR",
        "USER",
        "USER",
        "COPY",
        "COPY",
    ]
    assert 'ENV DEPLOY_PATH="/opt/ndgen-demo/bin"' in ins and 'ENV DEPLOY_BINS="ndgen-greet"' in ins
    assert 'ENV DEMO_GREETING="Hello"' in ins  # a recipe variable through context.*
    run = next(i for i in ins if "--mount=type=bind,from=neurocontainer-cache" in i)
    cache_id = re.search(r"source=/(h[0-9a-f]{8}),", run).group(1)
    assert f"/.neurocontainer-cache/{cache_id}/greet.sh /opt/ndgen-demo/bin/ndgen-greet" in run
    assert any('echo "x86 build"' in i for i in ins) and not any("arm build" in i for i in ins)
    assert plan.cache_mounts[0].files == (("greet.sh", "greet.sh"), ("motd", "motd"))
    assert plan.file("motd").contents == "demo 1.0 on x86_64"  # Jinja drops the final newline, as theirs


def test_demo_arch_selects_conditions():
    plan = load_recipe(DEMO, arch="aarch64")
    text = render(plan, "docker")
    assert "arm build" in text and "x86 build" not in text


def test_demo_singularity_sections_parse():
    from spython.main.parse.parsers import SingularityParser

    text = render(load_recipe(DEMO), "singularity")
    path = Path("/tmp") / f"ndgen-demo-{id(text)}.def"
    path.write_text(text)
    try:
        (recipe,) = SingularityParser(str(path)).recipe.values()
    finally:
        path.unlink()
    env = "\n".join(recipe.environ)
    assert 'DEPLOY_BINS="ndgen-greet"' in env and 'DEPLOY_PATH="/opt/ndgen-demo/bin"' in env
    files = [tuple(f.split()) for f in recipe.files]
    # COPY goes through %files to a staging path, and into place where it stood in %post
    assert ("README.md", "/.ndgen-copy/0/0/README.md") in files
    assert "cp -a /.ndgen-copy/0/0/README.md /README.md" in "\n".join(recipe.install)
    assert any(dst.endswith("/greet.sh") and src.startswith("cache/h") for src, dst in files)
    assert "/neurodocker" not in (recipe.cmd or "")  # add-default-template: false → no runscript
    text2 = render(load_recipe(HERE / "recipes" / "ndgen-demo"), "singularity")
    assert text2 == text  # deterministic
    # %environment is for run time; %post gets the same variables where the ENV was
    post = text.split("%post\n", 1)[1]
    assert post.index('export PATH="/opt/ndgen-demo/bin:$PATH"') < post.index('echo "built as')
    # no `su - USER` (a no-op login shell in %post): the user is created, %post stays root
    assert "useradd --no-user-group --create-home --shell /bin/bash demo" in post and "su - " not in post


def test_default_template_entrypoint_is_the_runscript(tmp_path):
    recipe = _recipe(tmp_path, "    - run: [echo hi]\n")
    text = render(load_recipe(recipe), "singularity")
    assert '%runscript\n/neurodocker/startup.sh "$@"' in text
    assert 'export DEBIAN_FRONTEND="noninteractive"' in text
    docker = render(load_recipe(recipe), "docker")
    assert docker.rstrip().splitlines()[-1] == "# End saving to specification to JSON."
    assert 'ENTRYPOINT ["/neurodocker/startup.sh"]' in docker


def test_out_writes_a_complete_build_context(tmp_path):
    from click.testing import CliRunner

    from neurodocker_nd.cli import cli

    out = tmp_path / "ctx"
    result = CliRunner().invoke(cli, ["recipe", str(DEMO), "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    cache = [n for n in names if n.startswith("cache/")]
    assert {"Dockerfile", "README.md", "build.yaml"} <= set(names)
    assert len(cache) == 2 and any(n.endswith("/greet.sh") for n in cache)
    dockerfile = (out / "Dockerfile").read_text()
    assert dockerfile.split("FROM debian:bookworm")[0].count("FROM scratch AS neurocontainer-cache") == 1
    assert (out / "README.md").read_text().startswith("## ndgen-demo/1.0 ##")
    greet = next(out.rglob("greet.sh"))
    assert greet.stat().st_mode & 0o111


# ---------------------------------------------------------------- bad input

RECIPE_HEAD = (
    "name: bad\nversion: '1'\narchitectures: [x86_64]\nreadme: hi\n"
    "build:\n  kind: neurodocker\n  base-image: ubuntu:24.04\n  pkg-manager: apt\n  directives:\n"
)

BAD = [
    (
        "unknown-directive",
        "    - install: jq\n    - frobnicate: yes\n",
        "build.yaml:11: unknown directive 'frobnicate'",
    ),
    ("malformed-yaml", "    - install: [jq\n", "build.yaml:11: malformed YAML"),
    ("unknown-template", "    - template:\n        name: nosuchtool\n", "unknown template 'nosuchtool'"),
    ("unknown-version", "    - template:\n        name: ants\n        version: 0.0.1\n", "unknown version '0.0.1'"),
    ("bad-condition", "    - condition: arch ==\n      run: [echo]\n", "condition 'arch ==' does not parse"),
    ("missing-file", "    - file:\n        name: f\n        filename: nothere.txt\n", "nothere.txt does not exist"),
    (
        "file-absolute",
        "    - file:\n        name: f\n        filename: /etc/hostname\n",
        "file 'f': filename '/etc/hostname' is outside the recipe directory",
    ),
    (
        "file-dotdot",
        "    - file:\n        name: f\n        filename: ../../etc/hostname\n",
        "is outside the recipe directory",
    ),
    ("missing-copy", "    - copy: nothere.txt /opt/\n", "copy source 'nothere.txt' does not exist"),
    ("undefined-var", "    - run: ['echo {{ context.nosuch }}']\n", "build.yaml:10: UndefinedError"),
    ("unknown-get-file", "    - run: ['cat {{ get_file(\"x\") }}']\n", "get_file('x'): no such declared file"),
    (
        "section-in-run",
        "    - run: |\n        echo a\n        %runscript\n        id\n",
        "would open a Singularity section",
    ),
    ("quote-in-env", "    - environment:\n        A: 'x\" B=\"y'\n", "outside its quotes"),
    ("sandbox", "    - run: ['{{ context.__class__ }}']\n", "build.yaml"),
]


@pytest.mark.parametrize("case, body, message", BAD, ids=[b[0] for b in BAD])
def test_bad_recipe_one_line_exit_2_nothing_written(tmp_path, case, body, message):
    recipe = tmp_path / "bad"
    recipe.mkdir()
    (recipe / "build.yaml").write_text(RECIPE_HEAD + body)
    out = tmp_path / "out"
    out.mkdir()
    for extra in (["-o", str(out / "Dockerfile")], ["--out", str(out / "ctx")]):
        proc = run_ndgen("recipe", str(recipe), *extra)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("ndgen: error: "), proc.stderr
        assert message in lines[0], lines[0]
        assert list(out.iterdir()) == []


def test_include_is_resolved_from_the_repository_root(tmp_path):
    root = tmp_path / "repo"
    (root / "macros" / "m").mkdir(parents=True)
    (root / "macros" / "m" / "x.yaml").write_text(
        "directives:\n  - run: [echo from-macro]\n  - environment: {M: '1'}\n"
    )
    recipe = root / "recipes" / "r"
    recipe.mkdir(parents=True)
    (recipe / "build.yaml").write_text(RECIPE_HEAD.replace("bad", "r") + "    - include: macros/m/x.yaml\n")
    text = render(load_recipe(recipe), "docker")
    assert "echo from-macro" in text and 'ENV M="1"' in text
    (recipe / "build.yaml").write_text(RECIPE_HEAD + "    - include: ../../etc/passwd\n")
    with pytest.raises(NdgenError, match="not found under"):
        load_recipe(recipe)


def test_group_with_scopes_variables(tmp_path):
    recipe = tmp_path / "r"
    recipe.mkdir()
    (recipe / "build.yaml").write_text(
        RECIPE_HEAD + "    - group:\n        - run: ['echo {{ who }}']\n      with:\n        who: inner\n"
        "    - variables:\n        who: outer\n    - run: ['echo {{ who }}']\n"
    )
    runs = [s.command for s in load_recipe(recipe).steps if isinstance(s, st.Run)]
    assert runs[-2:] == [" echo inner", " echo outer"]


def test_recipe_rendering_does_not_import_docker_sdk():
    code = f"import sys\nfrom neurodocker_nd.cli import main\nmain(['recipe', {str(DEMO)!r}, '-o', '/dev/null'])\n"
    code = code.replace("main([", "try:\n    main([").replace(
        "'/dev/null'])\n", "'/dev/null'])\nexcept SystemExit:\n    pass\n"
    )
    code += "print('docker' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_steps_refuse_to_break_out_of_an_instruction():
    for bad in (
        lambda: st.Workdir("/x\nRUN id"),
        lambda: st.Env({"A": 'x"'}),
        lambda: st.Run("echo \\"),
        lambda: st.Run("echo a\n# trailing comment"),
        lambda: st.Copy(("a b",), "/x"),
        lambda: st.User("root; id"),
        lambda: st.Label({"a": "x\ny"}),
    ):
        with pytest.raises(st.StepError):
            bad()
    assert st.Run("echo a\n# note\necho b").command == "echo a\n# note\necho b"  # a comment inside is fine


def _recipe(tmp_path, directives: str, extra: str = "") -> Path:
    d = tmp_path / "r"
    d.mkdir(exist_ok=True)
    (d / "build.yaml").write_text(
        RECIPE_HEAD.replace("bad", "r").replace("readme: hi\n", "readme: hi\n" + extra) + directives
    )
    return d


def test_templates_dir_both_forms_searched_before_the_registry(tmp_path):
    tdir = tmp_path / "templates"
    tdir.mkdir()
    # neurocontainers' `directives:` form, more than [environment, run]: split in order
    (tdir / "mytool.yaml").write_text(
        "name: mytool\nurl: https://example.org\nbinaries:\n  arguments:\n    required: [version]\n"
        "    optional: {prefix: '/opt/mytool-{{ self.version }}', arch: x86_64}\n"
        "  urls: {'1.0': https://example.org/mytool-1.0.tgz}\n"
        "  dependencies: {apt: ['lib{{ self.arch }}-dev', curl]}\n"
        "  directives:\n"
        "    - environment: {MYTOOL: '{{ self.prefix }}'}\n"
        "    - run: ['{{ self.install_dependencies() }}', 'echo {{ self.urls[self.version] }} {{ self.arch }}']\n"
        "    - environment: {AFTER: '1'}\n"
    )
    # neurodocker's form under a registry name: the directory wins over the registry
    (tdir / "jq.yaml").write_text(
        "name: jq\nurl: https://example.org\nsource:\n  instructions: echo from-templates-dir\n"
    )
    recipe = _recipe(
        tmp_path, "    - template:\n        name: mytool\n        version: '1.0'\n    - template:\n        name: jq\n"
    )
    text = render(load_recipe(recipe, templates=[tdir]), "docker")
    assert f"# Reproduce: ndgen recipe {recipe} --templates {tdir}\n" in text
    ins = instructions(text)
    i = ins.index('ENV MYTOOL="/opt/mytool-1.0"')
    run = ins[i + 1]
    # dependency Jinja rendered before sorting; the recipe's arch reaches a template that declares it
    assert run.startswith("RUN apt-get update -qq && apt-get install -y -q --no-install-recommends curl libx86_64-dev")
    assert run.endswith("&& echo https://example.org/mytool-1.0.tgz x86_64")
    assert ins[i + 2] == 'ENV AFTER="1"' and ins[i + 3] == "RUN echo from-templates-dir"
    with pytest.raises(NdgenError, match="unknown template 'mytool'"):  # without the directory
        load_recipe(recipe)


def test_arch_and_options(tmp_path):
    recipe = _recipe(
        tmp_path,
        "    - condition: context.options.extra\n      run: ['echo extra {{ context.version }}']\n",
        extra="options:\n  extra:\n    default: false\n    version_suffix: '.x'\n",
    )
    assert "echo extra" not in render(load_recipe(recipe), "docker")
    assert "echo extra 1.x" in render(load_recipe(recipe, options={"extra": "true"}), "docker")
    with pytest.raises(NdgenError, match="--option nosuch: r has no such option"):
        load_recipe(recipe, options={"nosuch": "1"})
    with pytest.raises(NdgenError, match="r does not support aarch64"):
        load_recipe(recipe, arch="aarch64")
    with pytest.raises(NdgenError, match="not a directory"):
        load_recipe(recipe, templates=[tmp_path / "nope"])


def test_a_newline_in_the_recipe_path_stays_in_the_comment(tmp_path):
    recipe = _recipe(tmp_path, "    - run: [echo hi]\n")
    odd = tmp_path / "x\nRUN touch pwned"
    recipe.rename(odd)
    text = render(load_recipe(odd), "docker")
    assert "\nRUN touch pwned" not in text and "x\\x0aRUN touch pwned" in text


def test_plain_substitutions_skip_jinja_but_match_it(tmp_path):
    """The no-compile path for `{{ a.b }}` strings gives exactly Jinja's text; anything else goes to Jinja."""
    from neurodocker_nd.core import jinja
    from neurodocker_nd.render.recipe import find_recipe
    from neurodocker_nd.render.recipe import jinja as rc
    from neurodocker_nd.render.recipe.loader import Loader

    recipe = _recipe(
        tmp_path, "    - run: ['echo {{ context.version }}']\n", extra="variables:\n  d: {k: v, items: x}\n  n: 3\n"
    )
    loader = Loader(find_recipe(recipe), "x86_64", {}, (), None, 2)
    loader.load()
    ns = rc.namespace(loader.ctx)
    cases = [
        "v{{ context.version }}-{{arch}}\n",
        "{{ d.k }} {{ n }} {{ parallel_jobs }}",
        "{{ d.items }}",
        "{{ context.get_file }}",
        "{{ n + 1 }}",
        "{% if arch %}x{% endif %}",
        "${HOME} {{ context.name }}",
    ]
    for text in cases:
        fast = rc._substitute(text, ns)
        slow = jinja.compiled(text).render(**ns)
        assert fast is None or fast == slow, text
    assert rc._substitute(cases[0], ns) == "v1-x86_64" and rc._substitute(cases[1], ns) == "v 3 2"
    assert rc._substitute("{{ d.items }}", ns) is None and rc._substitute("{{ n + 1 }}", ns) is None


def test_a_file_or_copy_linking_out_of_the_recipe_is_refused(tmp_path):
    # An untrusted recipe must not stage a host file into the image through a symlink.
    recipe = tmp_path / "r"
    recipe.mkdir()
    (recipe / "leak").symlink_to("/etc/hostname")
    for body in ("    - file:\n        name: f\n        filename: leak\n", "    - copy: leak /opt/\n"):
        (recipe / "build.yaml").write_text(RECIPE_HEAD + body)
        with pytest.raises(NdgenError, match="'leak' is outside the recipe directory"):
            load_recipe(recipe)
