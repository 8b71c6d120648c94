"""`ndgen minify --keep-packages` and the data-family rules: a minified image keeps working
for inputs and programs the trace never saw.

Unit tests read hand-made dpkg databases in a temporary root (diversions, merged
/usr, a database symlinked out of the root).  The engine tests use one image
(the Debian base + gawk, bc, tzdata; perl-base and libc-bin come with the base):
workload A is traced, then a different workload B — other programs and inputs
of the same packages — must give the source image's output in the minified one.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import uuid
from pathlib import Path

import docker.errors
import pytest

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.minify import families, packages
from support import build_image, remove_images, run_ndgen

PREFIX = "ndgen-test-keeppkg"

# ---------------------------------------------------------------------------- unit: dpkg database


def _dpkg_root(tmp_path: Path, lists: dict[str, list[str]], diversions: str = "") -> Path:
    root = tmp_path / "root"
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    status = []
    for name, files in lists.items():
        bare, _, arch = name.partition(":")
        status.append(
            f"Package: {bare}\nStatus: install ok installed\nArchitecture: {arch or 'all'}\n"
            + ("Multi-Arch: same\n" if arch else "")
        )
        (info / f"{name}.list").write_text("/.\n" + "".join(f"{f}\n" for f in files))
    status.append("Package: gone\nStatus: deinstall ok config-files\nArchitecture: all\n")
    (info / "gone.list").write_text("/etc/gone.conf\n")
    (root / "var/lib/dpkg/status").write_text("\n".join(status))
    (root / "var/lib/dpkg/diversions").write_text(diversions)
    return root


def test_dpkg_owners_follow_merged_usr_and_diversions(tmp_path):
    root = _dpkg_root(
        tmp_path,
        {
            "dash": ["/bin", "/bin/sh", "/usr/share/man/man1/dash.1.gz"],
            "tool": ["/bin", "/bin/tool", "/usr/share/tool", "/usr/share/tool/data"],
            "libx:amd64": ["/usr/lib/libx.so.1"],
            "other": ["/bin/tool"],  # a file `tool` diverted away from other packages
        },
        diversions="/bin/tool\n/bin/tool.other\ntool\n",
    )
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/share/tool").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")  # merged /usr: dpkg says /bin/sh, the file is /usr/bin/sh
    db = packages.read_database(str(root))
    assert set(db.packages) == {"dash", "tool", "libx:amd64", "other"}  # config-files state: not installed
    assert db.owners["/usr/bin/sh"] == ("dash",)
    assert db.owners["/usr/bin/tool"] == ("tool",)  # the diverting package keeps the name
    assert db.owners["/usr/bin/tool.other"] == ("other",)  # everyone else's file moved
    assert db.owning(["/usr/bin/sh", "/usr/share/tool/data"]) == {"dash", "tool"}
    assert db.lookup("libx") == ["libx:amd64"] and db.lookup("libx:amd64") == ["libx:amd64"]
    assert db.lookup("nope") == []
    assert "/usr/lib/libx.so.1" not in db.owners  # its directory is gone from the image: not owned


def test_database_is_read_inside_the_root_only(tmp_path):
    root = tmp_path / "root"
    (root / "var/lib").mkdir(parents=True)
    # An absolute link must resolve in the image, never to the host's own dpkg database.
    (root / "var/lib/dpkg").symlink_to("/var/lib/dpkg")
    assert Path("/var/lib/dpkg/status").exists()  # the host has one (Debian)
    with pytest.raises(NdgenError, match="no package database"):
        packages.read_database(str(root))


def test_rpm_database_needs_the_images_rpm(tmp_path):
    root = tmp_path / "root"
    (root / "var/lib/rpm").mkdir(parents=True)  # an empty directory is no database
    with pytest.raises(NdgenError, match="no package database"):
        packages.read_database(str(root))
    (root / "var/lib/rpm/rpmdb.sqlite").write_bytes(b"")
    with pytest.raises(NdgenError, match=r"rpm database \(/var/lib/rpm\) needs its rpm"):
        packages.read_database(str(root))
    assert packages.rpm_command("/var/lib/rpm") == "rpm --dbpath /var/lib/rpm -qa --qf '[%{=NAME}\\t%{FILENAMES}\\n]'"


def test_docs_and_foreign_translations_are_not_package_content():
    langs = packages.languages({"LANG": "de_DE.UTF-8"})
    assert {"de_DE", "de"} <= langs
    assert packages.is_doc("/usr/share/doc/gawk/copyright")
    assert packages.is_doc("/usr/share/man/man1/gawk.1.gz")
    assert packages.is_doc("/usr/share/locale/fr/LC_MESSAGES/gawk.mo", langs)
    assert not packages.is_doc("/usr/share/locale/de/LC_MESSAGES/gawk.mo", langs)
    assert not packages.is_doc("/usr/lib/x86_64-linux-gnu/gawk/ordchr.so", langs)


def test_family_roots():
    env = {"LANG": "de_DE.UTF-8", "LC_TIME": "C", "PATH": "/bin"}
    roots = families.family_roots(
        ["/usr/share/zoneinfo/Europe/Paris", "/usr/lib/x86_64-linux-gnu/gconv/ISO8859-1.so"], env
    )
    assert roots == [
        ("family:gconv", "/usr/lib/x86_64-linux-gnu/gconv"),
        ("family:zoneinfo", "/usr/share/zoneinfo"),
    ]
    # A locale family only once some compiled locale was touched; ENV-named ones only.
    touched = families.family_roots(["/usr/lib/locale/C.utf8/LC_CTYPE"], env)
    assert touched == [
        ("family:locale", "/usr/lib/locale/de_DE.UTF-8"),
        ("family:locale", "/usr/lib/locale/de_DE.utf8"),
    ]
    assert families.family_roots(["/usr/share/zoneinfo"], env) == []  # the directory itself: no member
    assert families.locale_variants("sr_RS.UTF-8@latin") == ["sr_RS.UTF-8@latin", "sr_RS.utf8@latin"]


def test_bad_suite_is_one_line_before_any_engine_work(tmp_path):
    bad = tmp_path / "fulltest.yaml"
    bad.write_text("name: a\ntests: 3\n")
    for suite, message in (
        (bad, f"ndgen: error: {bad}:2: tests: 3 is not of type 'array' (fulltest schema)\n"),
        (tmp_path / "none.yaml", f"ndgen: error: test suite not found: {tmp_path / 'none.yaml'}\n"),
    ):
        proc = run_ndgen("minify", "no-such-image:1", "-t", "x:1", "--tests", str(suite))
        assert (proc.returncode, proc.stderr) == (2, message)


# ---------------------------------------------------------------------------- engine

DOCKERFILE = """\
FROM {base}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gawk bc tzdata \\
 && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /opt/tools && printf '#!/bin/sh\\necho tools ok\\n' > /opt/tools/hello && chmod 755 /opt/tools/hello \\
 && echo flag > /etc/ndgen-flag
ENV LANG=C.UTF-8 DEPLOY_BINS=gawk:bc DEPLOY_PATH=/opt/tools
"""

# Workload A, traced.  Workload B: other programs and inputs of the same packages.
WORKLOAD_A = (
    "gawk 'BEGIN { print length(\"abc\") }'",
    "TZ=Europe/Paris date -d @0 '+%H:%M %Z'",
    "perl -e 'print qq(perl\\n)'",
    "printf 'caf\\351\\n' | iconv -f LATIN1 -t UTF-8 | od -An -c",
)
# Chosen by an input value: kept by the family rules, with or without --keep-packages.
WORKLOAD_B_FAMILIES = (
    "TZ=Asia/Tokyo date -d @0 '+%H:%M %Z'; TZ=America/New_York date -d @86400 '+%c %Z'",
    "printf 'caf\\351 \\200\\n' | iconv -f CP1252 -t UTF-16LE | od -An -tx1",
    "printf 'na\\303\\257ve\\n' | gawk '{ print length($0), toupper($0) }'",
)
# Other programs / modules of the traced packages, and a package named with --keep-package.
WORKLOAD_B_PACKAGES = (
    "gawk -l ordchr 'BEGIN { print ord(\"A\"), chr(66) }'",
    'gawk -l filefuncs \'BEGIN { stat("/etc/hostname", s); print s["type"] }\'',
    "perl -MPOSIX -e 'print floor(2.7), qq(\\n), strftime(qq(%Y\\n), gmtime(0))'",
    "perl -MList::Util=sum -e 'print sum(1..10), qq(\\n)'",
    "printf 'b\\na\\nc\\n' | sort -r | head -2; seq 3 | tac; echo hi | base64; stat -c %F /etc/passwd",
    "echo 'scale=5; 4*a(1)' | bc -l",
)


@pytest.fixture(scope="module")
def pkg_image(docker_client, base_image):
    tag = build_image(docker_client, f"{PREFIX}-src", DOCKERFILE.format(base=base_image))
    yield tag
    remove_images(docker_client, [tag])


def _outputs(client, tag: str, commands) -> list[tuple[int, bytes]]:
    """Exit code and stdout+stderr of each command (each in a subshell), in one `docker run --network none`."""
    script = "".join(f'( {command}\n) 2>&1; echo "@@rc=$?@@"\n' for command in commands)
    out = client.containers.run(tag, ["/bin/sh", "-c", script], network_mode="none", remove=True, stderr=True)
    parts = re.split(rb"@@rc=(\d+)@@\n", out)  # output, code, output, code, …, ""
    return [(int(parts[i + 1]), parts[i]) for i in range(0, len(parts) - 1, 2)]


def _minify(client, source: str, tag: str, *args: str) -> subprocess.CompletedProcess[str]:
    source_id = client.images.get(source).id
    proc = run_ndgen("minify", source, "-t", tag, *(a for c in WORKLOAD_A for a in ("-c", c)), *args, timeout=600)
    assert client.images.get(source).id == source_id, "the source image changed"
    return proc


@pytest.mark.docker
def test_keep_packages_runs_untraced_programs_of_traced_packages(docker_client, pkg_image, new_tag, scratch, tmp_path):
    report = tmp_path / "report.json"
    proc = _minify(
        docker_client, pkg_image, new_tag, "--keep-packages", "--keep-package", "bc", "--report", str(report)
    )
    assert proc.returncode == 0, proc.stderr
    assert list(scratch.iterdir()) == []
    workload_b = WORKLOAD_B_FAMILIES + WORKLOAD_B_PACKAGES
    expected = _outputs(docker_client, pkg_image, workload_b)
    assert all(code == 0 for code, _ in expected), expected
    assert _outputs(docker_client, new_tag, workload_b) == expected

    data = json.loads(report.read_text())
    kept = {p["name"]: p["bytes"] for p in data["packages"]}
    # gawk/perl/date/iconv are traced; bc is named; libc6 owns the traced loader and libraries.
    assert {"gawk", "perl-base", "coreutils", "libc-bin", "bc", "libc6:amd64", "tzdata"} <= set(kept)
    assert all(size > 0 for size in kept.values())
    assert "apt" not in kept and "dpkg" not in kept  # untraced packages stay out
    assert "packages kept whole:" in proc.stderr
    assert data["ratio"] > 1.5
    # Docs and man pages of kept packages are not part of the result.
    absent = _outputs(docker_client, new_tag, ["ls /usr/share/doc/gawk /usr/share/man/man1/gawk.1.gz"])
    assert absent[0][0] != 0


@pytest.mark.docker
def test_without_keep_packages_families_still_generalise(docker_client, pkg_image, new_tag, scratch, tmp_path):
    report = tmp_path / "report.json"
    proc = _minify(docker_client, pkg_image, new_tag, "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    # Another zone, another charset, another string under the ENV locale: kept by family rules.
    assert _outputs(docker_client, new_tag, WORKLOAD_B_FAMILIES) == _outputs(
        docker_client, pkg_image, WORKLOAD_B_FAMILIES
    )
    reasons = json.loads(report.read_text())["keep_reasons"]
    # (date and gawk open every category of the ENV locale themselves: see the closure test below)
    assert {"family:zoneinfo", "family:gconv"} <= set(reasons)
    # ...while programs nobody traced are gone: what --keep-packages is for (the test above).
    after = _outputs(docker_client, new_tag, WORKLOAD_B_PACKAGES)
    assert after != _outputs(docker_client, pkg_image, WORKLOAD_B_PACKAGES)
    assert [code for code, _ in after].count(0) < len(after) - 2


@pytest.mark.docker
def test_unknown_keep_package_is_one_line(docker_client, pkg_image, new_tag, scratch):
    proc = _minify(docker_client, pkg_image, new_tag, "--keep-package", "no-such-pkg")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"ndgen: error: --keep-package no-such-pkg: no such package installed in {pkg_image}"
    assert list(scratch.iterdir()) == []
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(new_tag)


@pytest.mark.docker
def test_closure_on_the_real_image_locale_family_and_owners(docker_client, pkg_image):
    from neurodocker_nd.minify.keep import closure
    from neurodocker_nd.minify.model import TraceRecord
    from neurodocker_nd.minify.source import open_source

    def record(*paths: str) -> TraceRecord:
        return TraceRecord(paths=frozenset(paths), missing=frozenset(), results=(), tracer="test", seconds=0.0)

    with open_source(docker_client, pkg_image) as source:
        # mawk sets LC_CTYPE only; `date +%c` in the same image then needs LC_TIME.
        keep = closure(source.pristine, source.config, record("/usr/bin/mawk", "/usr/lib/locale/C.utf8/LC_CTYPE"))
        assert "/usr/lib/locale/C.utf8/LC_TIME" in keep.paths and keep.reasons["family:locale"] > 0
        untouched = closure(source.pristine, source.config, record("/usr/bin/mawk"))
        assert not any(p.startswith("/usr/lib/locale/") for p in untouched.paths)
        assert "/usr/share/zoneinfo" not in untouched.paths  # no member touched: no family

        db = packages.read_database(str(source.pristine))
        # merged /usr: dpkg lists /lib/x86_64-linux-gnu/libc.so.6, the file is under /usr/lib
        assert db.owning(["/usr/lib/x86_64-linux-gnu/libc.so.6"]) == {"libc6:amd64"}
        named = closure(source.pristine, source.config, record("/usr/bin/mawk"), package_db=db, package_names=("bc",))
        assert "/usr/bin/bc" in named.paths and [name for name, _ in named.packages] == ["bc"]
        assert not any(p.startswith("/usr/share/doc/bc") for p in named.paths)
        assert "/usr/bin/gawk" not in named.paths  # without --keep-packages nothing else is whole


# ---------------------------------------------------------------------------- --tests SUITE.yaml

SUITE = """\
name: keeppkg
version: "1.0"
test_data:
  output_dir: out
setup:
  script: |
    printf '3\\n1\\n2\\n' > ${output_dir}/numbers.txt
tests:
  - name: gawk sums the setup's data
    command: gawk '{ s += $1 } END { print "sum=" s }' ${output_dir}/numbers.txt
    expected_output_contains: sum=6
  - name: bc computes pi
    command: echo 'scale=10; 4*a(1)' | bc -l
    expected_output_contains: "3.1415926532"
  - name: sorted output file
    command: sort -n ${output_dir}/numbers.txt > ${output_dir}/sorted.txt
    validate:
      - output_exists: ${output_dir}/sorted.txt
  - name: reads what the previous test wrote
    depends_on: sorted output file
    command: tr '\\n' , < ${output_dir}/sorted.txt
    expected_output_contains: "1,2,3,"
  - name: a file only ever tested for
    command: if [ -e /etc/ndgen-flag ]; then echo flag-present; fi
    expected_output_contains: flag-present
  - name: an expected failure
    command: gawk 'BEGIN { exit 3 }'
    expected_exit_code: 3
"""


@pytest.mark.docker
def test_tests_suite_is_the_workload_and_passes_on_the_result(docker_client, pkg_image, new_tag, scratch, tmp_path):
    # A long path with rich markup in it: the summary prints it as it is, on one line.
    suite = tmp_path / ("suites-[red]-" + "x" * 80) / "fulltest.yaml"
    suite.parent.mkdir()
    suite.write_text(SUITE)
    profile = tmp_path / "sums.yaml"
    profile.write_text(
        "name: sums\ndescription: gawk on setup-made input\nmounts: [/work]\n"
        "setup:\n  - seq 5 > /work/n.txt\ncommands:\n  - gawk '{ s += $1 } END { print s }' /work/n.txt\n"
    )
    report = tmp_path / "report.json"
    source_id = docker_client.images.get(pkg_image).id
    # Combined with --profile, -c and --keep-packages; the suite's bc, gawk, sort, tr and the
    # deploy check are traced.
    proc = run_ndgen(
        "minify", pkg_image, "-t", new_tag, "--tests", str(suite), "--profile", str(profile),
        "-c", "TZ=Europe/Paris date -d @0 +%H", "--keep-packages", "--report", str(report), timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        f"test suite {suite}: every test and the deploy check passed in the minified image" in proc.stderr.splitlines()
    )
    assert docker_client.images.get(pkg_image).id == source_id
    assert list(scratch.iterdir()) == []
    data = json.loads(report.read_text())
    assert data["verified"] is True and data["suite"] == str(suite)
    # the profile's and -c commands are compared byte for byte; the suite is judged by its runner
    assert [c["command"] for c in data["commands"]] == [
        "gawk '{ s += $1 } END { print s }' /work/n.txt",
        "TZ=Europe/Paris date -d @0 +%H",
    ]
    assert "/etc/ndgen-flag" in data["repaired"]  # only ever stat()ed: found by verify's re-trace
    assert {"gawk", "bc"} <= {p["name"] for p in data["packages"]}
    # The runner agrees, on its own: every test and the deploy check pass in the minified image.
    check = run_ndgen("test", new_tag, "--suite", str(suite), timeout=900)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "bin gawk" in check.stdout and "path /opt/tools" in check.stdout and "FAIL" not in check.stdout


@pytest.mark.docker
def test_tests_suite_failing_on_the_source_is_one_line(docker_client, pkg_image, new_tag, scratch, tmp_path):
    suite = tmp_path / "fulltest.yaml"
    suite.write_text("name: broken\ntests:\n  - name: always fails\n    command: gawk 'BEGIN { exit 1 }'\n")
    proc = run_ndgen("minify", pkg_image, "-t", new_tag, "--tests", str(suite), "--no-repair", timeout=900)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ndgen: error: test suite {suite} fails on the source image"), (
        proc.stderr
    )
    assert "always fails" in lines[0]
    assert list(scratch.iterdir()) == []
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(new_tag)


# ---------------------------------------------------------------------------- rpm

RPM_DOCKERFILE = """\
FROM {base}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rpm \\
 && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /root/rpmbuild/SPECS && printf '%s\\n' \\
  'Name: ndgen-hello' 'Version: 1.0' 'Release: 1' 'Summary: test' 'License: MIT' 'BuildArch: noarch' \\
  '%description' 'test' '%install' \\
  'mkdir -p %{{buildroot}}/opt/hello/bin %{{buildroot}}/opt/hello/share %{{buildroot}}/usr/share/doc/ndgen-hello' \\
  'printf "#!/bin/sh\\\\necho hello\\\\n" > %{{buildroot}}/opt/hello/bin/hello' \\
  'chmod 755 %{{buildroot}}/opt/hello/bin/hello' \\
  'echo data > %{{buildroot}}/opt/hello/share/data.txt' \\
  'echo readme > %{{buildroot}}/usr/share/doc/ndgen-hello/README' \\
  '%files' '/opt/hello' '/usr/share/doc/ndgen-hello' > /root/rpmbuild/SPECS/hello.spec \\
 && rpmbuild -bb /root/rpmbuild/SPECS/hello.spec >/dev/null 2>&1 \\
 && rpm -i --nodeps --dbpath /var/lib/rpm /root/rpmbuild/RPMS/noarch/ndgen-hello-1.0-1.noarch.rpm 2>/dev/null \\
 && rm -rf /root/rpmbuild /var/lib/dpkg/status
"""


@pytest.mark.docker
def test_keep_packages_on_an_rpm_image_reads_it_with_the_images_rpm(
    docker_client, base_image, new_tag, scratch, tmp_path
):
    # An rpm database (as on Rocky/CentOS, /var/lib/rpm) and no dpkg one, made with Debian's rpm.
    source = f"{PREFIX}-rpm:{uuid.uuid4().hex[:8]}"
    dockerfile = RPM_DOCKERFILE.format(base=base_image)
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=source, network_mode="host", rm=True)
    try:
        report = tmp_path / "report.json"
        proc = run_ndgen(
            "minify", source, "-t", new_tag, "-c", "/opt/hello/bin/hello", "--keep-packages", "--report", str(report),
            timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert [p["name"] for p in json.loads(report.read_text())["packages"]] == ["ndgen-hello"]
        # data of the package nobody read is there; its docs are not
        # (shell builtins only: no coreutils here, their dpkg database is gone)
        probe = (
            'read -r line < /opt/hello/share/data.txt; echo "$line"; '
            "[ -e /usr/share/doc/ndgen-hello/README ] || echo no-doc"
        )
        assert _outputs(docker_client, new_tag, [probe]) == [(0, b"data\nno-doc\n")]
        assert list(scratch.iterdir()) == []
    finally:
        remove_images(docker_client, [source])
