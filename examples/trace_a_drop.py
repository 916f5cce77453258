"""Trace a ping through a throw-away lab while a fault drops the replies: the trace shows the
request's hops, then the reply dying at the fault's hook, labelled with the fault (from the
fault's journal, which the tracer reads without taking anything from other readers).

Run as root: python examples/trace_a_drop.py
"""

import faultinj
from faultinj.faults.match import parse_match
from faultinj.labs import traffic
from faultinj.labs import Lab
from faultinj.trace import Tracer

with Lab().up() as lab:
    rec = faultinj.apply("drop=100%,proto=icmp", lab.b.ifname, netns_name=lab.b.netns)   # b's replies
    try:
        with Tracer(parse_match(["proto=icmp"])) as tracer:
            traffic.ping(lab.a.netns, lab.b.ip4, 2, interval=0.2)
            for hop in tracer.read(500):
                print(hop)
        [st] = [s for s in faultinj.status() if s.record.id == rec.id]
        print(f"counters: {st.counters}")
    finally:
        faultinj.clear(fault_id=rec.id)
