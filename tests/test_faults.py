"""The catalogue and spec grammar: pure Python, no kernel."""

import re

import pytest

from faultinj.api import check_seed, parse_duration
from faultinj.errors import ExitStatus, SpecError
from faultinj.faults import CATALOGUE, discover, parse_match, parse_spec
from faultinj.faults.base import ALWAYS
from faultinj.kernel import build, layout


@pytest.mark.parametrize("text,name,value,hook", [
    ("psh-ratio=10", "psh-ratio", 10, "tc-egress"),
    ("psh-ratio=1@ingress", "psh-ratio", 1, "tc-ingress"),
    ("drop=5%", "drop", 0.05, "tc-egress"),
    ("drop=0.05", "drop", 0.05, "tc-egress"),
    ("drop=0.2@ingress", "drop", 0.2, "tc-ingress"),
    ("drop=100%@xdp", "drop", 1.0, "xdp"),
    ("drop=0@tc-egress", "drop", 0.0, "tc-egress"),
    ("ttl-pong", "ttl-pong", 1.0, "xdp"),
    ("ttl-pong=50%@egress", "ttl-pong", 0.5, "tc-egress"),
])
def test_good_specs(text, name, value, hook):
    spec = parse_spec(text)
    assert (spec.name, spec.value, spec.hook) == (name, pytest.approx(value), hook)


@pytest.mark.parametrize("text,needle", [
    ("", "empty fault spec"),
    ("psh-ratoi=10", "did you mean 'psh-ratio'"),
    ("dorp=5%", "did you mean 'drop'"),
    ("nothing", "known faults"),
    ("drop", "drop needs a value"),
    ("drop=", "nothing after '='"),
    ("drop=5%@", "nothing after '@'"),
    ("drop=101%", "from 0% to 100%"),
    ("drop=-0.1", "from 0 to 1"),
    ("drop=nan", "from 0 to 1"),
    ("drop=abc", "from 0 to 1"),
    ("psh-ratio=0", "from 1 to 1000000000"),
    ("psh-ratio=2.5", "whole number"),
    ("psh-ratio=1000000001", "from 1 to"),
    ("psh-ratio=10@xdp", "cannot run on xdp"),
    ("drop=5%@egrss", "did you mean 'egress'"),
    ("ttl-pong=2", "from 0 to 1"),
])
def test_bad_specs_say_what_to_do(text, needle):
    with pytest.raises(SpecError) as err:
        parse_spec(text)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)
    assert err.value.status == ExitStatus.USAGE


def test_hook_flag_must_agree_with_spec():
    assert parse_spec("drop=1%", hook="ingress").hook == "tc-ingress"
    with pytest.raises(SpecError, match="give one"):
        parse_spec("drop=1%@xdp", hook="egress")


def test_thresholds():
    assert parse_spec("drop=100%").threshold == ALWAYS
    assert parse_spec("drop=0").threshold == 0
    assert parse_spec("psh-ratio=1").threshold == ALWAYS
    assert parse_spec("psh-ratio=10").threshold == round(ALWAYS / 10)
    assert abs(parse_spec("drop=5%").threshold / ALWAYS - 0.05) < 1e-9


def test_catalogue_describes_every_fault():
    for fault in CATALOGUE.values():
        d = fault.describe()
        assert d["default_hook"] in d["hooks"]
        assert d["program"].startswith("bpf/") and d["unit"]


def test_every_fault_program_has_its_source_and_every_source_its_fault():
    """A fault is bpf/X.bpf.c and faults/X.py: each catalogue fault's program is a source in bpf/, and
    each source in bpf/ (but the tracer's) is some fault's program, so neither half is forgotten."""
    sources = {p.name.removesuffix(".bpf.c") for p in build.bpf_dir().glob("*.bpf.c")
               if not p.name.startswith("trace")}
    programs = {f.program for f in CATALOGUE.values()}
    assert programs == sources, (programs - sources, sources - programs)


def test_a_module_with_a_fault_is_discovered(tmp_path, monkeypatch):
    """faults/X.py naming FAULT (or FAULTS) is in the catalogue with no list to edit: a package of two
    such modules and one without, discovered; a second fault of one name refused."""
    pkg = tmp_path / "morefaults"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "reorder2.py").write_text(
        "from dataclasses import replace\nfrom faultinj.faults.drop import FAULT as _DROP\n"
        "FAULT = replace(_DROP, name='reorder2', program='reorder2')\n")
    (pkg / "pair.py").write_text(
        "from dataclasses import replace\nfrom faultinj.faults.drop import FAULT as _DROP\n"
        "FAULTS = [replace(_DROP, name='pair-a'), replace(_DROP, name='pair-b')]\n")
    (pkg / "helpers.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover([str(pkg)], "morefaults")
    assert list(found) == ["pair-a", "pair-b", "reorder2"] and found["reorder2"].program == "reorder2"
    (pkg / "same.py").write_text(
        "from dataclasses import replace\nfrom faultinj.faults.drop import FAULT as _DROP\n"
        "FAULT = replace(_DROP, name='pair-a')\n")
    with pytest.raises(ImportError, match="pair-a is in the catalogue already"):
        discover([str(pkg)], "morefaults")
    assert set(CATALOGUE) >= {"drop", "ttl-pong", "delay", "ttl"}   # the real package, through the same path


@pytest.mark.parametrize("text", ["drop=5%,proto=udp,dport=53@ingress", "psh-ratio=10", "ttl=5,p=0.3,nth=2",
                                  "corrupt=1%,csum=bad,bits=3", "delay=20ms,jitter=5ms,dist=normal",
                                  "burst-loss=1%/30%", "ttl-pong,vlan=5", "rate=10mbit,per=all"])
def test_a_spec_shown_parses_back_to_itself(text):
    """Records keep the canonical spec (str(spec)); set and reap rebuild the config from it."""
    spec = parse_spec(text)
    assert parse_spec(str(spec)) == spec


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("5m", 300), ("1.5h", 5400), ("500ms", 0.5), ("7", 7)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["0s", "-1s", "abc", "10x", "400d"])
def test_bad_durations(text):
    with pytest.raises(SpecError):
        parse_duration(text)


def test_seeds():
    assert check_seed(5) == 5
    assert 0 <= check_seed(None) < 2**64
    with pytest.raises(SpecError):
        check_seed(-1)
    with pytest.raises(SpecError):
        check_seed(2**64)


@pytest.mark.parametrize("text,shown", [
    ("drop=10%,proto=tcp,dport=443,dst=10.0.0.0/24", "drop=0.1,proto=tcp,dport=443,dst=10.0.0.0/24@tc-egress"),
    ("psh-ratio=3,src=fd00::/64,sport=1000-2000@ingress", "psh-ratio=3,src=fd00::/64,sport=1000-2000@tc-ingress"),
    ("ttl-pong,vlan=5", "ttl-pong=1.0,vlan=5@xdp"),
    ("drop=1,flags=+syn-ack", "drop=1.0,flags=+syn-ack@tc-egress"),
])
def test_filters_parse_and_show(text, shown):
    spec = parse_spec(text)
    assert str(spec) == shown
    assert len(bytes(layout.match_struct(spec.match))) == 96


@pytest.mark.parametrize("text,needle", [
    ("drop=1,prot=tcp", "did you mean 'proto'"),
    ("drop=1,dport=70000", "port 0..65535"),
    ("drop=1,dport=9-3", "port 0..65535"),
    ("drop=1,src=10.0.0.0/8,dst=fd00::1", "must both be IPv4 or both IPv6"),
    ("drop=1,src=10.0.0.300", "address or a network"),
    ("drop=1,flags=syn", "+FLAG"),
    ("drop=1,flags=+syn-syn", "both present and absent"),
    ("drop=1,flags=+synn", "unknown flag"),
    ("drop=1,proto=icmp,dport=3", "proto must be tcp or udp"),
    ("drop=1,proto=gre", "protocol number"),
    ("drop=1,vlan=5000", "VLAN id 0..4095"),
    ("drop=1,dport=", "needs a value"),
    ("drop=1,dport=1,dport=2", "given twice"),
    ("drop=1,mark=0x10@xdp", "XDP runs before"),
    ("drop=1,mark=ten", "VALUE or VALUE/MASK"),
    ("drop=1,mark=0x110/0xff", "outside the mask"),
])
def test_bad_filters(text, needle):
    with pytest.raises(SpecError, match=needle.replace("+", r"\+").replace("(", r"\(")):
        parse_spec(text)


# ---- fault options, the journal switch, the filter in Python -------------------------------

def test_fault_options_parse_pack_and_refuse_where_unknown():
    from faultinj.faults.corrupt import BAD_CSUM

    spec = parse_spec("corrupt=2%,csum=bad,bits=3,proto=udp")
    assert spec.options == {"csum": "bad", "bits": 3} and spec.param == 3 | BAD_CSUM
    assert parse_spec("corrupt=1").options == {"csum": "fix", "bits": 1} and parse_spec("corrupt=1").param == 1
    assert str(spec) == "corrupt=0.02,csum=bad,bits=3,proto=udp@tc-egress"
    for bad, msg in (("corrupt=1,csum=maybe", "give csum=fix"), ("corrupt=1,bits=65", "1..64"),
                     ("drop=1,csum=bad", "unknown filter 'csum'"), ("corrupt=1,bitz=2", "did you mean 'bits'"),
                     ("truncate=10", "14..65535"), ("duplicate=1@xdp", "cannot run on xdp"),
                     ("drop=1,journal=maybe", "journal=on")):
        with pytest.raises(SpecError, match=re.escape(msg)):
            parse_spec(bad)
    assert parse_spec("drop=1,journal=off").match.journal is False
    assert parse_spec("drop=1").match.journal is True


def test_match_accepts_what_the_kernel_filter_would():
    m = parse_match(["src=fd00::/64", "proto=tcp", "sport=1000-2000"])
    assert m.accepts("fd00::1", "fd00::2", 6, 1500, 80)
    assert not m.accepts("fd01::1", "fd00::2", 6, 1500, 80)      # outside the network
    assert not m.accepts("10.0.0.1", "10.0.0.2", 6, 1500, 80)    # IPv4 against an IPv6 filter
    assert not m.accepts("fd00::1", "fd00::2", 6, 999, 80)       # port out of range
    assert not m.accepts("fd00::1", "fd00::2", 17, 1500, 80)     # protocol
    assert parse_match([]).accepts(None, None, 0, 0, 0)          # no filter: everything


def test_journal_event_decodes_and_prints():
    import ipaddress
    import struct

    from faultinj.journal import EVENT_FORMAT, decode

    # idx, ts, ifindex, seq, saddr, daddr, l3, sport, dport, ip_id, l4, action, journal, value, gen
    raw = EVENT_FORMAT.pack(1, 5, 3, 777, ipaddress.ip_address("10.0.0.1").packed.ljust(16, b"\0"),
                            ipaddress.ip_address("10.0.0.2").packed.ljust(16, b"\0"), 0x0800, 40000, 80, 42, 6, 1, 1,
                            0, 0)
    assert EVENT_FORMAT.size == 80   # struct fi_event, bpf/lib/fault.h
    e = decode(raw, "f1", "drop=1.0@tc-egress", "ns/eth0", "tc-egress")
    assert (e.src, e.dst, e.sport, e.dport, e.ip_id, e.seq, e.action) == ("10.0.0.1", "10.0.0.2", 40000, 80, 42, 777,
                                                                          "drop")
    assert "drop tcp 10.0.0.1:40000 -> 10.0.0.2:80 id=42 seq=777" in str(e)
    assert e.key() == ("10.0.0.1", "10.0.0.2", 6, 40000, 80, 42, 777)
    assert struct.calcsize("<QQIIIIHBx16s128s4x") == 184   # struct fi_trace_event, bpf/trace.bpf.c
