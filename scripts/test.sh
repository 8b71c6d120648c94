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
command -v mksquashfs >/dev/null || need_apt+=(squashfs-tools)
command -v strace >/dev/null || need_apt+=(strace)
command -v git >/dev/null || need_apt+=(git)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v -i warning || true

if ! docker info >/dev/null 2>&1; then
  echo "test.sh: starting dockerd (no bridge network)"
  # Never a bridge: private 172.x traffic is not allowed here.
  nohup dockerd --bridge=none --iptables=false --ip-masq=false >/tmp/ndgen-dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "test.sh: dockerd did not start (see /tmp/ndgen-dockerd.log)" >&2; exit 1; }
fi

# The base image is cached by tag: `ndgen base` does nothing when it exists.
python3 -m neurodocker_nd.cli base debian:bookworm

# In CI an integration test that cannot reach the engine fails instead of skipping.
export NDGEN_REQUIRE_DOCKER=1
exec python3 -m pytest "$@"
