"""tcpdump-style filter expressions: the grammar, the 'or of ands' the kernel holds, and refusals."""

from __future__ import annotations

import pytest

from faultinj.errors import SpecError
from faultinj.faults.match import DPORT, DST4, MARK, PROTO, SPORT, SRC4, SRC6, VLAN, parse_match
from faultinj.faults.pcap_filter import MAX_SLOTS, compile_filter
from faultinj.kernel import layout


def passes(expr: str, src, dst, proto, sport=0, dport=0) -> bool:
    """The compiled filters judged in Python (Match.accepts: the kernel filter's twin)."""
    return any(m.accepts(src, dst, proto, sport, dport) for m in compile_filter(expr))


def test_an_and_of_fields_is_one_filter_like_the_flags():
    (m,) = compile_filter("tcp and dst host 10.0.0.2 and dst port 80")
    flags = parse_match(["proto=tcp", "dst=10.0.0.2", "dport=80"])
    assert bytes(layout.match_struct(m)) == bytes(layout.match_struct(flags))


def test_host_and_port_without_direction_are_two_filters():
    a, b = compile_filter("host 10.0.0.2")
    assert (a.fields, b.fields) == (SRC4, DST4)
    ms = compile_filter("tcp and dst port 80 and host 10.0.0.2")
    assert [m.fields for m in ms] == [PROTO | DPORT | SRC4, PROTO | DPORT | DST4]
    assert passes("tcp and dst port 80 and host 10.0.0.2", "10.0.0.2", "10.0.0.9", 6, 1234, 80)
    assert passes("tcp and dst port 80 and host 10.0.0.2", "10.0.0.9", "10.0.0.2", 6, 1234, 80)
    assert not passes("tcp and dst port 80 and host 10.0.0.2", "10.0.0.9", "10.0.0.8", 6, 1234, 80)
    assert not passes("tcp and dst port 80 and host 10.0.0.2", "10.0.0.2", "10.0.0.9", 17, 1234, 80)


def test_not_is_pushed_down_to_the_field_tests():
    (m,) = compile_filter("not port 22")            # not (sport 22 or dport 22) = both negated
    assert m.fields == SPORT | DPORT and m.negate == SPORT | DPORT
    assert passes("not port 22", "10.0.0.1", "10.0.0.2", 1)              # ICMP has no port: passes (pcap)
    assert passes("not port 22", "10.0.0.1", "10.0.0.2", 6, 40000, 443)
    assert not passes("not port 22", "10.0.0.1", "10.0.0.2", 6, 40000, 22)
    assert not passes("not port 22", "10.0.0.1", "10.0.0.2", 6, 22, 40000)
    ms = compile_filter("not (tcp and port 22)")    # (not tcp) or (not sport and not dport), absorbed
    assert [(m.fields, m.negate) for m in ms] == [(PROTO, PROTO), (SPORT | DPORT, SPORT | DPORT)]
    assert passes("not (tcp and port 22)", "10.0.0.1", "10.0.0.2", 17, 22, 22)
    assert not passes("not (tcp and port 22)", "10.0.0.1", "10.0.0.2", 6, 22, 80)
    assert passes("not not udp", "10.0.0.1", "10.0.0.2", 17) and not passes("! ! udp", "10.0.0.1", "10.0.0.2", 6)


@pytest.mark.parametrize("expr,fields", [
    ("tcp dst port 80", [PROTO | DPORT]),
    ("udp src portrange 1000-2000", [PROTO | SPORT]),
    ("src net 10.0.0.0/8", [SRC4]),
    ("ip6 and udp", [SRC6 | PROTO]),
    ("ip and src host 10.0.0.1", [SRC4]),             # 'ip' is implied by the IPv4 source
    ("ip proto 47", [PROTO]),
    ("vlan 10 && icmp", [VLAN | PROTO]),
    ("mark 0x10/0xff", [MARK]),
    ("(udp || icmp) and dst net 10.0.0.0/24", [PROTO | DST4, PROTO | DST4]),
    ("tcp or tcp and port 80", [PROTO]),               # absorbed
])
def test_grammar(expr, fields):
    assert [m.fields for m in compile_filter(expr)] == fields


def test_values_land_where_the_flags_put_them():
    (m,) = compile_filter("udp src portrange 1000-2000")
    assert m.proto == 17 and m.sport == (1000, 2000)
    (m,) = compile_filter("mark 0x10/0xff")
    assert m.mark == (0x10, 0xFF)
    (m,) = compile_filter("vlan 10")
    assert m.vlan == 10


@pytest.mark.parametrize("expr,needle", [
    ("", "empty filter expression"),
    ("tcp and", "ends early"),
    ("(tcp or udp", "ends early"),
    ("tcp udp", "unexpected 'udp'"),
    ("dst port 80 and dst port 81", "both test dport in one 'and'"),
    ("tcp and udp", "both test proto"),
    ("host 1.1.1.1 or host 2.2.2.2 or host 3.3.3.3", f"needs 6 kernel filters ('or' of 'and's), more than {MAX_SLOTS}"),
    ("vlan", "not whether a tag is present"),
    ("tcp[13] & 2 != 0", "'tcp[13]' is not supported"),
    ("ether host 02:00:00:00:00:01", "'ether' is not supported"),
    ("host 10.0.0.0/24", "a host is one address"),
    ("port 70000", "a port 0..65535"),
    ("portrange 5", "a range LOW-HIGH"),
    ("src tcp", "src/dst qualify host, net or port"),
])
def test_what_the_kernel_filter_cannot_hold_is_refused_in_one_line(expr, needle):
    with pytest.raises(SpecError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as e:
        compile_filter(expr)
    assert "\n" not in str(e.value)


def test_an_expression_has_as_many_slots_as_the_tracer():
    """pcap_filter.MAX_SLOTS and layout.TRACE_SLOTS (FI_TRACE_SLOTS, checked against BTF at build)
    are written twice, so that reading a fault's maps does not load the catalogue: they must agree."""
    assert MAX_SLOTS == layout.TRACE_SLOTS
