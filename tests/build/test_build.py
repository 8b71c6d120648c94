"""`ndgen build` plumbing and the Apptainer stand-in: parser, translation, engine-free errors,
and the stand-in's Apptainer semantics on the real engine (tiny definitions, no apt)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from neurodocker_nd.build import apptainer as defbuild
from neurodocker_nd.build.docker_build import build_recipe, check_tag
from neurodocker_nd.core import engine
from neurodocker_nd.errors import NdgenError
from support import remove_images, unique_tag

DEF = """\
# a comment before the header
Bootstrap: docker
From: debian:bookworm

%files
    payload.txt /opt/payload.txt

%environment
    export GREETING="hello from %environment"

%post
    # `from:` and `bootstrap` inside a script are script text, not header lines
    echo "debootstrap from: here" > /opt/post.txt
    echo "post saw GREETING=[${GREETING:-}]" >> /opt/post.txt
    cat > /opt/heredoc.txt <<'EOF'
    indented line
EOF
    echo 'export FROM_POST="set in %post"' >> "$SINGULARITY_ENVIRONMENT"
    ls /sys/class/net > /opt/build-net.txt

%runscript
    echo "runscript args: $*"

%test
    test -f /opt/payload.txt

%labels
    org.example.owner Jane Doe
    org.example.version 1.2

%help
    Some help.
"""


# --------------------------------------------------------------------------- parser


def test_parser_keeps_sections_verbatim_and_in_order():
    d = defbuild.parse_definition(DEF)
    assert d.get("bootstrap") == "docker" and d.get("FROM") == "debian:bookworm"
    assert [s.name for s in d.sections] == ["files", "environment", "post", "runscript", "test", "labels", "help"]
    post = d.body("post")
    assert "debootstrap from: here" in post  # spython would have taken this for a header line
    assert "    indented line\nEOF" in post  # indentation and heredocs survive
    assert d.sections[2].line == 11
    assert defbuild.parse_labels(d.body("labels")) == {"org.example.owner": "Jane Doe", "org.example.version": "1.2"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Bootstrap: docker\nFrom: x\n%bogus\necho\n", r"unknown section %bogus"),
        ("Bootstrap docker\n", r"expected `Key: value`"),
    ],
)
def test_parser_errors_name_file_and_line(text, message):
    with pytest.raises(NdgenError, match=r"my\.def:\d+: " + message):
        defbuild.parse_definition(text, source="my.def")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("From: debian:bookworm\n%post\ntrue\n", "no Bootstrap"),
        ("Bootstrap: library\nFrom: debian\n", "Bootstrap: library is not supported"),
        ("Bootstrap: docker\n%post\ntrue\n", "no From"),
        ("Bootstrap: docker\nFrom: a\nStage: one\nBootstrap: docker\nFrom: b\n", "multi-stage"),
        ("Bootstrap: docker\nFrom: a\n%setup\ntouch $SINGULARITY_ROOTFS/x\n", "%setup runs on the build host"),
        ("Bootstrap: docker\nFrom: a\n%appinstall foo\ntrue\n", "SCIF apps"),
        ("Bootstrap: docker\nFrom: a\n%post -c /bin/bash\ntrue\n", "section arguments"),
        ("Bootstrap: docker\nFrom: a\n%files\nmissing.txt /x\n", "does not exist"),
    ],
)
def test_unsupported_definitions_are_refused(text, message, tmp_path):
    with pytest.raises(NdgenError, match=message):
        defbuild.translate(defbuild.parse_definition(text), files_root=tmp_path)


def test_translation_runs_post_like_apptainer(tmp_path):
    (tmp_path / "payload.txt").write_text("payload\n")
    standin = defbuild.translate(defbuild.parse_definition(DEF), files_root=tmp_path)
    lines = standin.context.dockerfile.splitlines()
    assert lines[0] == "FROM debian:bookworm"
    # %files before %post, %post as one `/bin/sh -ex` script, metadata after it.
    assert lines[1] == 'COPY ["ndgen-sif/files/0", "/opt/payload.txt"]'
    assert lines[2] == "COPY ndgen-sif/post.sh /.post.script"
    assert lines[3].startswith('RUN ["/usr/bin/env", "SINGULARITY_ENVIRONMENT=/.singularity.d/env/91-environment.sh"')
    assert "/bin/sh -ex /.post.script" in lines[3]
    assert lines[-2:] == ['ENTRYPOINT ["/.singularity.d/actions/run"]', "CMD []"]
    names = {f.arcname for f in standin.context.files}
    assert {
        "ndgen-sif/singularity.d/env/90-environment.sh",
        "ndgen-sif/singularity.d/runscript",
        "ndgen-sif/singularity.d/test",
        "ndgen-sif/singularity.d/actions/exec",
    } <= names
    assert standin.has_test and standin.labels["org.example.owner"] == "Jane Doe"


def test_apptainer_command_for_sites_that_have_it():
    assert (
        defbuild.apptainer_command("dcm2niix:sys", Path("/tmp/r.def")) == "apptainer build dcm2niix_sys.sif /tmp/r.def"
    )


# --------------------------------------------------------------------------- CLI without an engine


@pytest.mark.parametrize("tag", ["UPPER:case", "bad tag", "", "x:"])
def test_bad_tags_are_refused_before_anything_runs(tag):
    with pytest.raises(NdgenError, match="bad image tag"):
        check_tag(tag)


@pytest.mark.parametrize(
    ("ref", "plain", "with_host"),
    [
        ("dcm2niix:sys", True, True),
        ("neurodesk/ndtool_1.0:v1.2-rc_3", True, True),
        ("a__b-c--d/e.f", True, True),
        ("localhost:5000/tool:1", False, True),
        ("registry.example.org/team/tool", True, True),  # as a path: `registry.example.org` is a component
        ("Registry.Example.org:443/tool", False, True),
        ("a..b", False, False),  # docker's separators: one '.', one '_', '__' or a run of '-'
        ("a_-b", False, False),
        ("a._b:1", False, False),
        ("tool:-x", False, False),
        ("tool:" + "x" * 128, True, True),
        ("tool:" + "x" * 129, False, False),
        ("tool:sys\n", False, False),  # the whole text must be the name
        ("", False, False),
    ],
)
def test_one_image_name_grammar_for_build_and_minify(ref, plain, with_host):
    """build's check_tag (no registry host) and minify's -t (host allowed) read one grammar."""
    assert engine.is_image_name(ref, host=False) is plain
    assert engine.is_image_name(ref, host=True) is with_host


def test_missing_engine_is_one_clear_line(ndgen_cli, tmp_path):
    proc = ndgen_cli(
        "build",
        "--pkg",
        "dcm2niix,method=system",
        "--os",
        "debian:bookworm",
        "-t",
        "ndgen-test-build-noengine",
        "--log",
        str(tmp_path / "b.log"),
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ndgen: error: no Docker engine answers at unix://"), proc.stderr


def test_subcommand_modules_do_not_import_the_docker_sdk():
    # `ndgen --help` imports every subcommand module; rendering must stay light.
    code = (
        "import sys, neurodocker_nd.cli.commands.build, neurodocker_nd.cli.commands.base, "
        "neurodocker_nd.build.docker_build, neurodocker_nd.build.base_image, neurodocker_nd.cli.commands.test, "
        "neurodocker_nd.build.suite, neurodocker_nd.build.testrun; "
        "print('docker' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- the stand-in on the engine


@attrs.frozen
class _Pkg:
    name: str
    test: str | None
    version: str | None = None
    method: str = "system"


@attrs.frozen
class _Def:
    """A definition file written by hand (the renderer's own are built in test_build_engine)."""

    text: str
    base_image: str
    packages: tuple[_Pkg, ...]
    fmt: str = "singularity"


@pytest.fixture
def standin_image(docker_client, base_image, tmp_path, monkeypatch):
    tags: list[str] = []

    def build(text: str, tag: str, packages=(), **options):
        repo, _, name = tag.partition(":")
        tag = unique_tag(repo, name)  # runs sharing the engine never build over each other's
        tags.append(tag)
        (tmp_path / "payload.txt").write_text("payload\n")
        monkeypatch.chdir(tmp_path)  # %files sources are relative to the build directory, as in Apptainer
        recipe = _Def(text.replace("debian:bookworm", base_image), base_image, tuple(packages))
        return build_recipe(recipe, tag, log_path=tmp_path / f"{tag.replace(':', '_')}.log", **options)

    yield build
    remove_images(docker_client, tags)


def _run(client, image, argv, entrypoint=None) -> str:
    out = client.containers.run(image, argv, entrypoint=entrypoint, network_mode="none", remove=True)
    return out.decode()


@pytest.mark.docker
def test_standin_follows_apptainer_semantics(docker_client, standin_image):
    packages = [
        _Pkg("payload", "test -s /opt/payload.txt"),
        _Pkg("offline", 'test "$(ls /sys/class/net)" = lo'),  # tests run with --network none
    ]
    outcome = standin_image(DEF, "ndgen-test-build-standin:semantics", packages, network="host")
    assert [(t.name, t.passed) for t in outcome.tests] == [("payload", True), ("offline", True), ("%test", True)]
    image = outcome.image_id
    # The build ran on the host's network (--network host, asked for above): it saw the host's interfaces.
    build_net = _run(docker_client, image, ["cat", "/opt/build-net.txt"], entrypoint=[]).split()
    assert "lo" in build_net and len(build_net) > 1 and "docker0" not in build_net
    # %post ran under /bin/sh from /, without %environment (Apptainer applies it only at run time).
    assert _run(docker_client, image, ["cat", "/opt/post.txt"], entrypoint=["/bin/sh", "-c", 'exec "$@"', "-"]) == (
        "debootstrap from: here\npost saw GREETING=[]\n"
    )
    assert _run(docker_client, image, ["cat", "/opt/heredoc.txt"], entrypoint=[]) == "    indented line\n"
    # `apptainer exec`: %environment and what %post wrote to $SINGULARITY_ENVIRONMENT.
    env = _run(
        docker_client, image, ["/bin/sh", "-c", 'echo "$GREETING|$FROM_POST"'], entrypoint=[defbuild.EXEC_ENTRYPOINT]
    )
    assert env == "hello from %environment|set in %post\n"
    # …which the plain image config does not carry: they come from /.singularity.d/env at run time.
    assert _run(docker_client, image, ["/bin/sh", "-c", 'echo "[$GREETING]"'], entrypoint=[]) == "[]\n"
    # `apptainer run IMG a b` → the runscript with the arguments.
    assert _run(docker_client, image, ["a", "b"]) == "runscript args: a b\n"
    labels = docker_client.images.get(image).labels
    assert labels["org.example.owner"] == "Jane Doe" and labels["org.ndgen.format"] == "singularity"
    assert (
        _run(
            docker_client,
            image,
            ["/bin/sh", "-c", "test ! -e /.post.script && cat /.singularity.d/runscript.help"],
            entrypoint=[],
        )
        == "    Some help.\n"
    )


@pytest.mark.docker
def test_a_failing_test_section_fails_the_build_report(docker_client, standin_image):
    text = DEF.replace("test -f /opt/payload.txt", "echo 'payload missing' >&2; exit 3")
    outcome = standin_image(text, "ndgen-test-build-standin:failing-test")
    assert [(t.name, t.exit_code) for t in outcome.failures] == [("%test", 3)]
    assert "payload missing" in outcome.failures[0].reason


@pytest.mark.docker
def test_a_failing_post_names_the_command(docker_client, standin_image):
    text = DEF.replace('echo "debootstrap from: here" > /opt/post.txt', "ls /definitely/missing")
    with pytest.raises(NdgenError) as info:
        standin_image(text, "ndgen-test-build-standin:failing-post")
    message = info.value.message
    assert "failed at %post command `ls /definitely/missing` (exit 2)" in message
    assert "No such file or directory" in message and "log: " in message


@pytest.mark.docker
def test_a_hung_test_times_out_and_fails(docker_client, standin_image):
    sleeper = unique_tag("sleeper")  # the test container's label: this run's only
    outcome = standin_image(DEF, "ndgen-test-build-standin:hung", [_Pkg(sleeper, "sleep 120")], test_timeout=2)
    [hung] = outcome.failures
    assert hung.name == sleeper and hung.exit_code is None and hung.reason == f"timed out after {hung.seconds:.0f} s"
    assert 2 <= hung.seconds < 60
    assert not docker_client.containers.list(all=True, filters={"label": f"org.ndgen.test={sleeper}"})
