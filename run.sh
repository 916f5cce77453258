#!/usr/bin/env bash
# Set up everything faultinj needs on a fresh Debian/Ubuntu machine, then
#   ./run.sh demo   — replay the built-in demo in its own network namespaces
#   ./run.sh test   — run the test suite (real kernel: needs root)
#   ./run.sh bench  — the benchmarks (bench/run.py; also installs iperf3, nftables, bpftrace)
# System packages come from apt, Python ones into ./.venv.
set -euo pipefail
cd "$(dirname "$0")"

what=${1:-}
case "$what" in
  demo|test|bench) ;;
  *) echo "usage: $0 demo|test|bench" >&2; exit 2 ;;
esac
shift

if [ "$(id -u)" -ne 0 ]; then
  echo "faultinj loads BPF programs and builds network namespaces: re-running as root" >&2
  exec sudo -E "$0" "$what" "$@"
fi

APT_PACKAGES="clang llvm libbpf-dev libbpf1 iproute2 ethtool iputils-ping util-linux python3-venv"
[ "$what" = bench ] && APT_PACKAGES="$APT_PACKAGES iperf3 nftables bpftrace"
# the tests also run the OVS scenario through a real Open vSwitch bridge (userspace datapath)
[ "$what" = test ] && APT_PACKAGES="$APT_PACKAGES openvswitch-switch"
# ... and containers as targets against a real Docker daemon (tests/test_containers.py)
[ "$what" = test ] && APT_PACKAGES="$APT_PACKAGES docker.io busybox-static"
# ... and a second kernel: a Debian guest under QEMU (virtme-ng from pip; busybox for its initramfs)
[ "$what" = test ] && APT_PACKAGES="$APT_PACKAGES qemu-system-x86 busybox-static"
# ... and hosts reached through ssh (tests/test_remote.py: an sshd per namespace, reached via socat)
[ "$what" = test ] && APT_PACKAGES="$APT_PACKAGES openssh-client openssh-server socat"
[ "$what" = test ] && APT_PACKAGES="$APT_PACKAGES chromium"  # the HTML report in a real headless browser (tests/test_report.py)
missing=""
for p in $APT_PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "installing:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq $missing >/dev/null
fi

PY=${PYTHON:-python3}
VENV=${FAULTINJ_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# a real (non-editable) install: the tests run against the wheel, bpf/ and scenarios/ included. Only
# when what it is built from changed since the last one (a stamp in the venv), and the test extras
# (pyproject.toml's [test]) only for test and bench: the demo needs none of them.
extras="[test]"
[ "$what" = demo ] && extras=""
built_from=$(find pyproject.toml faultinj bpf scenarios -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 |
  LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
stamp="$VENV/.faultinj-installed"
installed=$(cat "$stamp" 2>/dev/null || true)
if [ "$installed" = "$built_from$extras" ] || [ "$installed" = "$built_from[test]" ]; then
  echo "faultinj is installed and up to date in $VENV" >&2
else
  echo "installing faultinj$extras into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q ".$extras"
  echo "$built_from$extras" >"$stamp"
fi

if [ "$what" = test ] && ! ovs-vsctl --timeout=3 show >/dev/null 2>&1; then
  # ovsdb-server + ovs-vswitchd; --no-mlockall: containers may not raise the memlock limit
  /usr/share/openvswitch/scripts/ovs-ctl start --no-mlockall >/dev/null 2>&1 ||
    echo "warning: could not start Open vSwitch: the OVS scenario test will fail" >&2
fi

if [ "$what" = test ]; then
  # A private Docker daemon that leaves the machine's networking alone (no bridge, no iptables, no
  # forwarding); the tests find it at this socket. /usr/bin/docker: /usr/local/bin may hold another.
  DOCKER_DIR=/run/faultinj-docker
  export DOCKER_HOST=unix://$DOCKER_DIR/docker.sock FAULTINJ_REQUIRE_DOCKER=1
  # the containerd this dockerd runs for itself (under its exec root): --runtime containerd is tested on it
  export CONTAINERD_ADDRESS=$DOCKER_DIR/exec/containerd/containerd.sock
  [ -x /usr/bin/docker ] && export FAULTINJ_DOCKER=/usr/bin/docker
  if ! "${FAULTINJ_DOCKER:-docker}" info >/dev/null 2>&1; then
    mkdir -p "$DOCKER_DIR"
    setsid dockerd --iptables=false --ip6tables=false --bridge=none --ip-forward=false --ip-masq=false \
      --data-root /var/lib/faultinj-docker --exec-root "$DOCKER_DIR/exec" -H "$DOCKER_HOST" \
      --pidfile "$DOCKER_DIR/dockerd.pid" >"$DOCKER_DIR/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 60); do "${FAULTINJ_DOCKER:-docker}" info >/dev/null 2>&1 && break; sleep 0.5; done
    "${FAULTINJ_DOCKER:-docker}" info >/dev/null 2>&1 ||
      echo "warning: dockerd did not start (see $DOCKER_DIR/dockerd.log): the container tests will fail" >&2
  fi
fi

case "$what" in
  demo) exec "$VENV/bin/faultinj" demo "$@" ;;
  # two halves at once (tests/README.md): the host's tests one after another in one xdist worker,
  # the guests (tests marked guest) in the other; -m 'not guest' is the quick host run
  test) exec "$VENV/bin/pytest" -q -p no:cacheprovider -n 2 --dist loadgroup "$@" ;;
  bench) exec "$VENV/bin/python" bench/run.py "$@" ;;
esac
