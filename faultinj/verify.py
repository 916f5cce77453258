"""`faultinj verify`: capture on an interface of a lab built by other means
(VMs, someone's namespaces) and judge a ratio against a fault already applied."""

from __future__ import annotations

import time

from . import api, stats
from .errors import SpecError
from .kernel import caps
from .labs.capture import Capture
from .packets import parse
from .scenario.expect import RunData, evaluate
from .scenario.schema import ExpectEntry
from .verdict import Check, Verdict
from .scenario.predicates import compile_predicate

DIRECTIONS = ("in", "out", "any")   # which packets a capture takes (lab/capture.py)


def verify(ifname: str, *, netns_name: str | None = None, duration: str | float | None = "10s",
           count: int | None = None, of: str = "all", having: str, p: float | None = None,
           ratio: int | None = None, fault_id: str | None = None, direction: str = "in", snaplen: int = 256,
           pcap: str | None = None, confidence: float | None = None) -> Verdict:
    if confidence is None:
        confidence = stats.default_confidence()
    else:
        stats.check_confidence(confidence, f"bad --confidence {confidence}")
    if direction not in DIRECTIONS:
        raise SpecError(f"unknown --direction '{direction}': give one of {', '.join(DIRECTIONS)}")
    caps.require_privileges()
    if (p is None) == (ratio is None):
        raise SpecError("give --p P or --ratio N (the rate the capture must show)")
    if p is not None and not 0 <= p <= 1:
        raise SpecError(f"bad --p {p}: give a probability 0..1")
    if ratio is not None and ratio < 1:
        raise SpecError(f"bad --ratio {ratio}: give a whole number >= 1")
    of_pred = compile_predicate(of)
    compile_predicate(having)
    seconds = api.parse_duration(duration) if duration is not None else None
    if seconds is None and count is None:
        raise SpecError("give --duration or --count to bound the capture")
    before = _counters(fault_id) if fault_id else None
    cap = Capture(netns_name, ifname, snaplen=snaplen, direction=direction).start()
    try:
        end = time.monotonic() + seconds if seconds else None
        while (end is None or time.monotonic() < end):
            if count is not None and sum(1 for f in list(cap.frames) if of_pred(parse(f.data, f.length))) >= count:
                break
            time.sleep(0.2)
    finally:
        cap.stop()
    where = f"{netns_name}/{ifname}" if netns_name else ifname   # the verdict's lines say which capture
    data = RunData(packets={where: [parse(f.data, f.length) for f in cap.frames]})
    params = {"capture": where, "of": of, "having": having, "confidence": confidence}
    params.update({"p": p} if p is not None else {"ratio": ratio})
    result = Verdict("verify", facts={"packets captured": len(cap.frames)})
    result.checks.append(evaluate(ExpectEntry("fraction", params, 0), data))
    if fault_id:
        after = _counters(fault_id)
        data.counters[fault_id] = {k: after[k] - before.get(k, 0) for k in after}
        fparams = {"fault": fault_id, "confidence": confidence, **({"p": p} if p is not None else {"ratio": ratio})}
        result.checks.append(evaluate(ExpectEntry("fault_ratio", fparams, 0), data))
    if cap.kernel_drops:
        result.checks.append(Check("capture lost nothing", False, str(cap.kernel_drops), "0"))
    if pcap:
        cap.save_pcap(pcap)
        result.pcaps["capture"] = pcap
    return result


def _counters(fault_id: str) -> dict:
    st = api.fault_status(fault_id)
    if st is None:
        raise SpecError(f"no fault with id {fault_id} (see 'faultinj status')")
    return st.counters or {}
