#!/usr/bin/env bash
# The project's test command (README, .ci/run): on a fresh Debian 12 machine as
# root it installs what the tests need, starts a Docker engine without a bridge
# network when none answers, builds the base image once, and runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
command -v runc >/dev/null || need_apt+=(runc)  # the minify sandbox as root (Docker's runtime)
command -v mksquashfs >/dev/null || need_apt+=(squashfs-tools)
command -v strace >/dev/null || need_apt+=(strace)
command -v git >/dev/null || need_apt+=(git)
command -v xz >/dev/null || need_apt+=(xz-utils)
[ -f /usr/share/distro-info/debian.csv ] || need_apt+=(distro-info-data)  # `ndgen base` suite names
[ -f /usr/share/lmod/lmod/init/bash ] || need_apt+=(lmod)  # `ndgen modules`' tests load the modules with Lmod
command -v docker-registry >/dev/null || need_apt+=(docker-registry)  # fleet tests' OCI registry (distribution 2.8)
[ -x /usr/bin/qemu-aarch64-static ] || need_apt+=(qemu-user-static)  # aarch64 images under emulation (issue 20)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Docker's default seccomp profile for the minify sandbox (neurodocker_nd/minify/oci.py reads
# it at run time): moby's profiles/seccomp/default.json as Debian's golang-github-docker-docker-dev
# ships it. Installing that package pulls a Go toolchain and ~245 packages, so only this one
# file is extracted from its .deb (apt-get download checks the .deb against the signed archive).
moby_profile=/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json
ndgen_profile=/usr/local/share/ndgen/docker-seccomp/default.json
if [ ! -f "$moby_profile" ] && [ ! -f "$ndgen_profile" ]; then
  echo "test.sh: extracting Docker's seccomp profile from golang-github-docker-docker-dev"
  deb_dir="$(mktemp -d)"
  if ! (cd "$deb_dir" && apt-get download -qq golang-github-docker-docker-dev 2>/dev/null); then
    apt-get update -qq
    (cd "$deb_dir" && apt-get download -qq golang-github-docker-docker-dev)
  fi
  deb="$(echo "$deb_dir"/golang-github-docker-docker-dev_*.deb)"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$deb_dir" ".$moby_profile"
  install -D -m 0644 "$deb_dir$moby_profile" "$ndgen_profile"
  echo "golang-github-docker-docker-dev $(dpkg-deb -f "$deb" Version) $moby_profile" >"${ndgen_profile%/*}/SOURCE"
  rm -rf "$deb_dir"
fi

# A virtualenv per checkout, outside the tree: Debian's python3 refuses system-wide
# pip installs (PEP 668), and an editable install of *this* checkout must not
# re-point a shared environment's `ndgen` at it. --system-site-packages reuses
# whatever is installed already; pip only fetches what is missing.
venv="${NDGEN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ndgen/venv-$(pwd -P | sha256sum | cut -c1-12)}"
stamp="$venv/.ndgen-installed-$(sha256sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "test.sh: installing the package into $venv"
  if ! python3 -m venv --system-site-packages "$venv" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null  # Debian splits venv out
    python3 -m venv --system-site-packages "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
py="$venv/bin/python"

dockerd_running() { grep -qsx dockerd /proc/[0-9]*/comm; }  # no procps needed
if ! docker info >/dev/null 2>&1; then
  if dockerd_running; then
    echo "test.sh: waiting for the running dockerd"  # never a second engine
  else
    echo "test.sh: starting dockerd (no bridge network)"
    # Never a bridge: private 172.x traffic is not allowed here.
    nohup dockerd --bridge=none --iptables=false --ip-masq=false >/tmp/ndgen-dockerd.log 2>&1 &
  fi
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "test.sh: no Docker engine answers (see /tmp/ndgen-dockerd.log)" >&2; exit 1; }
fi

# aarch64 images run here under qemu-user (docs/arch.md): binfmt_misc mounted and qemu-aarch64
# registered with the F flag, by the one command that does it (idempotent; a handler already
# registered with F is left alone).  The arm64 base is built by the first test that needs it.
"$py" -m neurodocker_nd.cli setup-emulation
# The base image is cached by tag: `ndgen base` does nothing when it exists.
"$py" -m neurodocker_nd.cli base "${NDGEN_TEST_BASE:-debian:bookworm}"

# A local apt cache for every build the tests make (issue 23): Debian's apt-cacher-ng,
# listening on 127.0.0.1 only.  `ndgen build` hands $NDGEN_APT_PROXY to RUN steps on the
# host network as Docker's predefined proxy build args, which stay out of the image
# (docs/build.md).  Without the cache the tests still pass, fetching from the mirror.
# An NDGEN_APT_PROXY already in the environment (even empty: no proxy) is left as it is.
acng_port=3142  # apt-cacher-ng 3.7 cannot bind a port above 32767
# Debian requests are fetched from the bases' mirror, deb.debian.org: the package's default
# backend (ftp.debian.org) is not what the images name and need not be reachable from here.
acng_remap='file:deb_mirror*.gz /debian ; http://deb.debian.org/debian/'
acng_serves() {  # it answers, and serves Debian's archive through itself (HTTP 200)
  timeout 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$acng_port && printf 'HEAD http://deb.debian.org/debian/dists/stable/InRelease HTTP/1.0\r\n\r\n' >&3 && head -c 16 <&3" 2>/dev/null | grep -q '^HTTP/1\.[01] 200'
}
if [ -z "${NDGEN_APT_PROXY+set}" ]; then
  if [ ! -x /usr/sbin/apt-cacher-ng ]; then
    echo "test.sh: installing apt-cacher-ng"
    # Written before the package: a service its install starts (systemd) is configured alike.
    install -d -m 0755 /etc/apt-cacher-ng
    [ -e /etc/apt-cacher-ng/zzz_ndgen.conf ] \
      || printf 'BindAddress: 127.0.0.1\nPort: %s\nRemap-debrep: %s\n' "$acng_port" "$acng_remap" >/etc/apt-cacher-ng/zzz_ndgen.conf
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apt-cacher-ng >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apt-cacher-ng >/dev/null 2>&1; } || true
  fi
  acng_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$acng_port" 2>/dev/null; }
  if ! acng_open && [ -x /usr/sbin/apt-cacher-ng ]; then
    install -d -m 0755 -o apt-cacher-ng -g apt-cacher-ng /run/apt-cacher-ng
    start-stop-daemon --start --quiet --chuid apt-cacher-ng --group apt-cacher-ng \
      --pidfile /run/apt-cacher-ng/pid --exec /usr/sbin/apt-cacher-ng -- -c /etc/apt-cacher-ng \
      ForeGround=0 BindAddress=127.0.0.1 Port="$acng_port" "Remap-debrep=$acng_remap" \
      PidFile=/run/apt-cacher-ng/pid SocketPath=/run/apt-cacher-ng/socket >/dev/null 2>&1 || true
    for _ in $(seq 20); do acng_open && break; sleep 0.5; done
  fi
  if acng_serves; then
    export NDGEN_APT_PROXY="http://127.0.0.1:$acng_port"
  else
    echo "test.sh: no apt-cacher-ng serves Debian's archive on 127.0.0.1:$acng_port: builds fetch from the mirror directly"
  fi
fi

# In CI an integration test that cannot reach the engine fails instead of skipping.
export NDGEN_REQUIRE_DOCKER=1
# The tools '.[test]' installs (hadolint, check-jsonschema, ndgen) live in the venv's
# bin/; tests and the subprocesses they start find them there, never a stray copy.
export PATH="$venv/bin:$PATH"
# Lint, format and types before the tests (issue 18): seconds, and each finding names its file:line.
# mypy's cache stays outside the tree, beside the venv, so a clean clone's second run is quick too.
"$venv/bin/ruff" check --quiet .
"$venv/bin/ruff" format --check --quiet .
"$venv/bin/mypy" --cache-dir "$venv/.mypy_cache"
# Several pytest-xdist workers (issue 23): most of the suite waits on the engine, the mirror and
# subprocesses, so two workers on two cores overlap that waiting.  `--dist loadgroup` with a group
# per test file (tests/conftest.py) keeps a file on one worker, so a module's fixtures (its images)
# are built once; files whose tests stand alone spread.  Images several files share are built
# once per run under a file lock (tests/conftest.py).  NDGEN_TEST_WORKERS=0 runs everything in
# this one process; a `-n` given to this script wins.
workers="${NDGEN_TEST_WORKERS:-2}"
xdist=()
[ "$workers" = 0 ] || xdist=(-n "$workers" --dist loadgroup)
exec "$py" -m pytest "${xdist[@]}" "$@"
