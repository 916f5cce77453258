"""Fixtures: private faultinj state per test session, throw-away labs.

Tests that touch the kernel run as root against the real kernel (CI runs as
root); nothing here attaches to the machine's own interfaces: every lab is
made of namespaces with a unique prefix and removed at teardown, even when
the test fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import shutil
import subprocess
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

# The suite judges about a hundred statistical checks per run (binomial intervals, KS, chi-square:
# shipped scenarios on this kernel and in guests, fault ratios, replay, time faults). At 0.999 each,
# one run in ten fails one by chance alone (CI 2026-12-04: report-tour's psh fault acted on
# 333/2798 segments, z = 3.4 for 1 in 10, its counters matching the capture). Every check that
# states no level of its own is judged at 1 - 1e-5 here (Bonferroni: the chance of any false alarm
# in a run about 0.1%); a wrong rate is still refused (tests/test_stats.py, the scenarios' "can fail" runs).
SUITE_CONFIDENCE = "0.99999"
os.environ.setdefault("FAULTINJ_CONFIDENCE", SUITE_CONFIDENCE)


@pytest.fixture(scope="session", autouse=True)
def private_state(tmp_path_factory):
    """Point faultinj's records, pins and cache at places of this session's own."""
    tag = secrets.token_hex(3)
    run = tmp_path_factory.mktemp("run")
    pins = f"/sys/fs/bpf/faultinj-test-{tag}"
    saved = {k: os.environ.get(k) for k in ("FAULTINJ_RUN_DIR", "FAULTINJ_PIN_ROOT")}
    os.environ["FAULTINJ_RUN_DIR"] = str(run)
    os.environ["FAULTINJ_PIN_ROOT"] = pins
    yield {"run_dir": run, "pin_root": Path(pins)}
    leftovers = sorted(os.listdir(pins)) if os.path.isdir(pins) else []
    shutil.rmtree(pins, ignore_errors=True)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    assert not leftovers, f"faultinj pins left behind by the tests: {leftovers}"


@pytest.fixture(scope="session")
def kernel_features(private_state) -> dict[str, bool]:
    """What doctor's probes find on the kernel the tests run on (this machine's, or a guest's):
    tests take the success path where a feature exists and the clear refusal where it does not."""
    from faultinj import doctor

    return {p.name: p.ok for p in doctor.run()}


@pytest.fixture
def made_prefixes(monkeypatch) -> list[str]:
    """The lab prefixes this test's runs draw (every topology's names start with one): a test
    checks that nothing of its own is left by these, never by counting the machine's namespaces,
    which the other half of the suite (and other people) make and remove meanwhile."""
    from faultinj import labs as lab_mod

    drawn: list[str] = []
    real = lab_mod.unique_prefix

    def recording() -> str:
        drawn.append(real())
        return drawn[-1]

    monkeypatch.setattr(lab_mod, "unique_prefix", recording)
    monkeypatch.setattr("faultinj.scenario.runner.unique_prefix", recording)
    return drawn


def netns_of(prefixes) -> list[str]:
    from faultinj.kernel.netns import list_netns

    return [ns for ns in list_netns() if ns.startswith(tuple(prefixes))] if prefixes else []


@pytest.fixture
def lab():
    from faultinj.labs import Lab, LinkSettings

    lab = Lab()
    try:
        lab.up(a_settings=LinkSettings(tx_checksum=False, gso_max_segs=1))
        yield lab
    finally:
        _clear_quietly(lab)
        lab.down()


@pytest.fixture
def offload_lab():
    """A veth as it comes (GSO up to 65535 segments, tx checksum offload on), in namespaces."""
    from faultinj.labs import Lab, LinkSettings

    lab = Lab()
    try:
        lab.up(a_settings=LinkSettings(tx_checksum=True))
        yield lab
    finally:
        _clear_quietly(lab)
        lab.down()


def _clear_quietly(lab) -> None:
    import faultinj

    for host in (lab.a, lab.b):
        if host is None:
            continue
        try:
            faultinj.clear(netns_name=host.netns, all_faults=True)
        except Exception:
            pass


@pytest.fixture(scope="session")
def foreign_obj(tmp_path_factory) -> Path:
    """Another tool's BPF object (tc and xdp sections that pass everything)."""
    out = tmp_path_factory.mktemp("foreign") / "foreign.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-c", str(DATA / "foreign.bpf.c"), "-o", str(out)],
                   check=True)
    return out


def ns_run(netns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, *cmd], capture_output=True, text=True, check=check)


def cli_runner():
    """typer's CliRunner with stderr apart (click < 8.2 mixes it in by default)."""
    from typer.testing import CliRunner

    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2: always apart
        return CliRunner()


def hook_prog_ids(netns: str, ifname: str, hook: str = "egress") -> list[int]:
    """The kernel's own view of what runs on a tc hook of a link: the tcx programs in the order they
    run (BPF_PROG_QUERY), then the tc filters' programs (iproute2)."""
    import json

    from faultinj.kernel import links, netns as ns

    with ns.entered(netns):
        import socket

        tcx = links.tcx_programs(socket.if_nametoindex(ifname), f"tc-{hook}")
    tc = ["tc", "-j", "filter", "show", "dev", ifname, hook]
    out = (subprocess.run(["nsenter", f"--net={netns}", *tc], capture_output=True, text=True, check=True).stdout
           if netns.startswith("/") else ns_run(netns, *tc).stdout)   # a namespace file (a container's) or a name
    filters = [f["options"]["prog"]["id"] for f in json.loads(out or "[]")
               if f.get("options", {}).get("prog")]
    return tcx + filters


class Attach:
    """How a test attaches its tc (or XDP) faults: `choice` is what it passes to apply (attach_kind),
    `kind` what the record must say."""

    def __init__(self, choice: str, kind: str):
        self.choice, self.kind = choice, kind

    def __repr__(self):
        return self.kind


@pytest.fixture(params=["tc-filter", "tcx-link"])
def tc_attach(request, kernel_features, lab) -> Attach:
    """Both tc attach kinds where the kernel has tcx links; where it has not, the tcx-link case checks
    that asking for a link is refused (exit 4's error) and that auto falls back to a tc filter."""
    if request.param == "tc-filter":
        return Attach("netlink", "tc-filter")
    if kernel_features["tcx links"]:
        return Attach("link", "tcx-link")
    _refused_then_auto(lab, "drop=0@egress")
    return Attach("auto", "tc-filter")


@pytest.fixture(params=["xdp", "xdp-link"])
def xdp_attach(request, kernel_features, lab) -> Attach:
    if request.param == "xdp":
        return Attach("netlink", "xdp")
    if kernel_features["xdp links"]:
        return Attach("link", "xdp-link")
    _refused_then_auto(lab, "drop=0@xdp")
    return Attach("auto", "xdp")


@pytest.fixture(params=["netlink", "links"])
def attach_both(request, kernel_features, lab) -> tuple[Attach, Attach]:
    """(tc, XDP) attach kinds together: both through netlink, or both as links where the kernel has them."""
    if request.param == "netlink":
        return Attach("netlink", "tc-filter"), Attach("netlink", "xdp")
    tc = Attach("link", "tcx-link") if kernel_features["tcx links"] else None
    xdp = Attach("link", "xdp-link") if kernel_features["xdp links"] else None
    if tc is None:
        _refused_then_auto(lab, "drop=0@egress")
    if xdp is None:
        _refused_then_auto(lab, "drop=0@xdp")
    return tc or Attach("auto", "tc-filter"), xdp or Attach("auto", "xdp")


def _refused_then_auto(lab, spec: str) -> None:
    import faultinj
    from faultinj.errors import KernelFeatureMissing

    with pytest.raises(KernelFeatureMissing, match="leave out --attach link"):
        faultinj.apply(spec, lab.a.ifname, netns_name=lab.a.netns, attach_kind="link")


@contextlib.contextmanager
def foreign_tcx_link(host, obj, kernel_features):
    """Another tool's tcx link on host's egress (held by this process), where the kernel has tcx;
    yields its program id (None without tcx)."""
    from faultinj.kernel import libbpf, links, netns

    if not kernel_features["tcx links"]:
        yield None
        return
    other = libbpf.load_object(str(obj), (), program="foreign_tc")
    try:
        with netns.entered(host.netns):
            fd = libbpf.link_create(other.prog_fd, socket.if_nametoindex(host.ifname), links.BPF_TCX_EGRESS)
        try:
            yield libbpf.object_id(other.prog_fd)
        finally:
            os.close(fd)
    finally:
        other.close()


# ---- the two halves under xdist (tests/README.md) ------------------------------------------------
# A test marked `guest` (it boots a guest under QEMU: one core busy for minutes) is in group "guest",
# every other test in group "host" (or the group its own xdist_group marker names). Under
# `-n 2 --dist loadgroup` (run.sh test) a group runs in one worker, one test after another: the host
# tests serially as ever in one worker, the guests in the other. A new test file lands in the host
# half unless it says `guest`. A guest test whose VMs hang off this machine's Open vSwitch bridge
# stays in the host group (xdist_group("host")): the userspace datapath is one for all bridges, and
# with seed-vms-ovs beside the host's OVS scenarios both failed once (megaflow without packets;
# PSH counted 84 at rx vs 78 acted), serially never.
#
# The grouping is done here, not by xdist's own loadgroup: xdist 3.8 renames item._nodeid, which
# pytest 9 no longer reads, so its groups silently become one test each. Each worker writes the
# group of every test it collected to a file the controller's scheduler reads.

_GROUPS: dict = {"path": None, "groups": None}


def _groups_path() -> str:
    if _GROUPS["path"] is None:
        import tempfile

        fd, _GROUPS["path"] = tempfile.mkstemp(prefix="faultinj-xdist-groups-", suffix=".json")
        os.close(fd)
    return _GROUPS["path"]


def _group(item) -> str:
    mark = item.get_closest_marker("xdist_group")
    if mark:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    return "guest" if item.get_closest_marker("guest") else "host"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Controller: tell each worker where to write its tests' groups."""
    node.workerinput["faultinj_groups"] = _groups_path()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    import json

    from xdist.scheduler import LoadScopeScheduling

    class Halves(LoadScopeScheduling):
        """loadgroup by our groups: a work unit per group, the largest (host) first."""

        def _split_scope(self, nodeid: str) -> str:
            if _GROUPS["groups"] is None:
                try:
                    with open(_groups_path()) as f:
                        _GROUPS["groups"] = json.load(f)
                except (OSError, ValueError):
                    return nodeid      # no worker wrote them (yet): a test is its own unit
            return _GROUPS["groups"].get(nodeid, nodeid)

    return Halves(config, log)


def pytest_unconfigure(config):
    if _GROUPS["path"] and not hasattr(config, "workerinput"):
        with contextlib.suppress(OSError):
            os.unlink(_GROUPS["path"])


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The guest tests come first: the longest half starts at once. Under xdist, each test's group
    goes to the controller (above)."""
    import json

    items.sort(key=lambda item: not item.get_closest_marker("guest"))   # stable: otherwise as collected
    if not os.environ.get("FAULTINJ_LAB_IN_GUEST"):
        # a guest test listed in a kernel's selection (tests/guests.py) runs in that boot only,
        # not again here booting a guest of its own
        from guests import SELECTIONS

        listed = {e for sel in SELECTIONS.values() for e in sel}
        inboot = [i for i in items if i.get_closest_marker("guest")
                  and (i.nodeid in listed or i.nodeid.split("[", 1)[0] in listed)]
        if inboot:
            config.hook.pytest_deselected(items=inboot)
            items[:] = [i for i in items if i not in inboot]
    path = getattr(config, "workerinput", {}).get("faultinj_groups")
    if path:
        tmp = f"{path}.{config.workerinput['workerid']}"
        with open(tmp, "w") as f:
            json.dump({item.nodeid: _group(item) for item in items}, f)
        os.replace(tmp, path)


def _properties(terminalreporter, name: str) -> list:
    """Values tests recorded (record_property / user_properties): reports come back from xdist's
    workers with them, where module globals of a worker never reach this process."""
    import json

    out = []
    for key in ("passed", "failed"):
        for rep in terminalreporter.stats.get(key, []):
            if getattr(rep, "when", None) != "call":
                continue
            out += [json.loads(v) for k, v in getattr(rep, "user_properties", ()) if k == name]
    return out


def pytest_terminal_summary(terminalreporter):
    """The checksum-state matrix's table (tests/test_csum_matrix.py), when its cells ran; each
    guest's boot and run times, when guests ran."""
    rows = _properties(terminalreporter, "matrix_row")
    if rows:
        from test_csum_matrix import format_table

        terminalreporter.write_sep("=", "checksum-state matrix")
        terminalreporter.write_line(format_table(rows))
    boots = {b["kernel"]: b for b in _properties(terminalreporter, "guest_boot")}
    if boots:
        terminalreporter.write_sep("=", "guest kernels (one boot each)")
        for b in boots.values():
            terminalreporter.write_line(f"{b['kernel']:<5} {b['release']:<28} boot {b['boot_s']:>6.1f} s  "
                                        f"run {b['run_s']:>6.1f} s  {b['summary']}")
