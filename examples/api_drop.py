"""Apply a seeded drop in a throw-away lab, send a UDP stream, read the counters.

Run as root: python examples/api_drop.py
"""

import faultinj
from faultinj.labs import traffic
from faultinj.labs import Lab

with Lab().up() as lab:
    rec = faultinj.apply("drop=10%", lab.a.ifname, netns_name=lab.a.netns, seed=42)
    try:
        res = traffic.udp_stream(lab.a.netns, lab.b.netns, lab.b.ip4, count=5000)
        [st] = [s for s in faultinj.status() if s.record.id == rec.id]
        print(f"sent 5000, received {len(res.received)}, counters {st.counters}")
    finally:
        faultinj.clear(fault_id=rec.id)
