"""The built-in demo: the seed article's bug replays in a lab of two
namespaces, each verified, then the lab is removed (also on failure)."""

from __future__ import annotations

from typing import Callable

from . import experiments
from .inject.lab import Lab, LinkSettings


def run(pcap_dir: str | None = None, seed: int = 42, keep: bool = False,
        progress: Callable[[str], None] = lambda msg: None) -> list[experiments.Outcome]:
    lab = Lab()
    # A's link: one segment per skb at tc egress, full checksums on the wire
    settings = LinkSettings(tx_checksum=False, gso_max_segs=1)
    outcomes = []
    try:
        progress(f"lab: namespaces {lab.prefix}-a and {lab.prefix}-b joined by a veth pair")
        lab.up(a_settings=settings)
        steps = [
            ("ttl-pong on A's XDP: 2000 pings, reply TTLs must spread over 1..64",
             lambda: experiments.ttl_pong(lab, seed=seed, pcap_dir=pcap_dir)),
            ("psh-ratio=10 on A's tc egress: 20 MB of TCP, 1 in 10 data segments must carry PSH",
             lambda: experiments.psh_ratio(lab, ratio=10, seed=seed, pcap_dir=pcap_dir)),
            ("drop=5% on A's tc egress: 20000 UDP datagrams, loss must be 5% within the CI",
             lambda: experiments.drop(lab, probability=0.05, seed=seed, pcap_dir=pcap_dir)),
            ("trace: 3 pings with B's replies dropped; each journey must end at the fault, labelled",
             lambda: experiments.traced_drop(lab, seed=seed)),
        ]
        for i, (what, step) in enumerate(steps, 1):
            progress(f"[{i}/{len(steps)}] {what}")
            outcomes.append(step())
    finally:
        if keep:
            progress(f"lab kept: remove it with 'ip netns del {lab.prefix}-a; ip netns del {lab.prefix}-b'")
        else:
            lab.down()
            progress("lab removed")
    return outcomes
