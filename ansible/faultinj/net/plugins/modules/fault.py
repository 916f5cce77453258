#!/usr/bin/python
# GNU General Public License v2.0 only (see the faultinj project)
"""faultinj.net.fault: one faultinj fault on an interface of the managed host."""

from __future__ import annotations

DOCUMENTATION = r"""
module: fault
short_description: Apply, change live, or remove a faultinj eBPF network fault
description:
  - Puts a faultinj fault (drop, psh-ratio, ttl-pong, corrupt, delay, ...) on an interface of the
    managed host, of a named network namespace there, or of a container there.
  - A fault is known by its interface, namespace or container, name and hook. C(state=present) with
    the same spec already there changes nothing; with another value or filters (or seed) it is changed
    live, a map write (C(faultinj set)), not removed and applied again.
  - The fault keeps running after the task (until its duration, or C(state=absent)).
  - faultinj must be importable by the Python Ansible runs on the host (ansible_python_interpreter);
    the task must run as root.
options:
  spec:
    description: The fault spec, as C(faultinj apply) takes it (e.g. C(drop=5%,proto=udp@ingress)).
      Required with C(state=present); with C(state=absent) it names which fault to remove (its name
      and hook), else every fault on the interface is removed.
    type: str
  interface:
    description: The interface.
    type: str
    required: true
  netns:
    description: A network namespace name (from C(ip netns list)) the interface is in.
    type: str
  container:
    description: A container (Docker or Podman by name or id) whose network namespace the interface is in.
    type: str
  seed:
    description: The seed of the fault's decisions (default a random one, returned).
    type: int
  duration:
    description: Stop acting after this long (an in-kernel deadline), e.g. C(30s), C(5m). Counted
      from the task that applied the fault; a later task with the same spec does not renew it.
    type: str
  state:
    description: present or absent.
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: drop 5% of UDP arriving on eth0
  faultinj.net.fault:
    spec: drop=5%,proto=udp@ingress
    interface: eth0
    seed: 42
    duration: 10m

- name: remove it
  faultinj.net.fault:
    spec: drop@ingress
    interface: eth0
    state: absent
"""

RETURN = r"""
id:
  description: The fault's id (state=present).
  type: str
spec:
  description: The fault's spec as faultinj keeps it.
  type: str
where:
  description: Where it is, as C(faultinj status) says it.
  type: str
seed:
  description: Its seed.
  type: int
counters:
  description: Its counters now (seen, matched, acted, ...).
  type: dict
action:
  description: What the task did - applied, set, none, removed, or what it would do in check mode.
  type: str
removed:
  description: The faults removed (state=absent), each with its id, spec and final counters.
  type: list
"""

import sys

from ansible.module_utils.basic import AnsibleModule


def _where_matches(rec, netns, container) -> bool:
    if container is not None:
        return rec.target == f"container:{container}"
    if netns is not None:
        return rec.netns == netns
    return rec.netns is None and rec.target is None


def _name_and_hook(spec: str):
    """The fault's name and hook a spec names, with or without a value (drop@ingress, drop=5%)."""
    from faultinj.faults import parse_change

    change = parse_change(spec)
    return change.fault.name, change.hook


def _present(module, api, parse_spec, p) -> dict:
    fs = parse_spec(p["spec"])     # a bad spec: faultinj's one-line error
    wanted = str(fs)
    mine = [st for st in api.status() if st.record.ifname == p["interface"]
            and _where_matches(st.record, p["netns"], p["container"])
            and st.record.fault == fs.name and st.record.hook == fs.hook]
    live = [st for st in mine if st.state == "active"]
    stale = [st for st in mine if st.state != "active"]   # expired, gone or detached: applied afresh
    if len(live) > 1:
        module.fail_json(msg=f"{len(live)} {fs.name} faults on {p['interface']} at {fs.hook} "
                             f"({', '.join(st.record.id for st in live)}): remove them with state=absent first")
    where = dict(netns_name=p["netns"], container=p["container"])
    if live:
        rec = live[0].record
        same = str(rec.fault_spec()) == wanted and (p["seed"] is None or p["seed"] == rec.seed)
        if same:
            return _result(api, rec, "none", changed=False)
        if module.check_mode:
            return _result(api, rec, "set", changed=True, now=False)
        rec = api.set_fault(p["interface"], wanted, seed=p["seed"], fault_id=rec.id, **where)
        return _result(api, rec, "set", changed=True)
    if module.check_mode:
        return {"changed": True, "action": "apply", "spec": wanted}
    for st in stale:
        api.clear(fault_id=st.record.id)
    rec = api.apply(fs, p["interface"], seed=p["seed"], duration=p["duration"], **where)
    return _result(api, rec, "applied", changed=True)


def _result(api, rec, action: str, changed: bool, now: bool = True) -> dict:
    st = api.fault_status(rec.id) if now else None
    return {"changed": changed, "action": action, "id": rec.id, "spec": rec.spec, "where": rec.where,
            "hook": rec.hook, "seed": rec.seed, "state": st.state if st else None,
            "counters": (st.counters if st else None) or {}, "warnings_faultinj": list(rec.warnings or [])}


def _absent(module, api, p) -> dict:
    name = hook = None
    if p["spec"]:
        name, hook = _name_and_hook(p["spec"])
    recs = [st.record for st in api.status() if st.record.ifname == p["interface"]
            and _where_matches(st.record, p["netns"], p["container"])
            and (name is None or st.record.fault == name) and (hook is None or st.record.hook == hook)]
    if not recs:
        return {"changed": False, "action": "none", "removed": []}
    if module.check_mode:
        return {"changed": True, "action": "remove", "removed": [{"id": r.id, "spec": r.spec} for r in recs]}
    removed = []
    for rec in recs:
        for r in api.clear(fault_id=rec.id):
            removed.append({"id": r.id, "spec": r.spec, "where": r.where, "counters": r.final_counters or {}})
    return {"changed": True, "action": "removed", "removed": removed}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            spec=dict(type="str"), interface=dict(type="str", required=True), netns=dict(type="str"),
            container=dict(type="str"), seed=dict(type="int"), duration=dict(type="str"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        mutually_exclusive=[("netns", "container")],
        required_if=[("state", "present", ("spec",))],
        supports_check_mode=True,
    )
    try:
        from faultinj import api
        from faultinj.errors import FaultinjError, from_foreign
        from faultinj.faults import parse_spec
    except ImportError as exc:
        module.fail_json(msg=f"faultinj is not importable by {sys.executable} ({exc}): install faultinj there, or "
                             "set ansible_python_interpreter to the Python it is installed in")
    p = module.params
    try:
        result = _present(module, api, parse_spec, p) if p["state"] == "present" else _absent(module, api, p)
    except FaultinjError as exc:
        module.fail_json(msg=str(exc).splitlines()[0], exit_code=int(exc.status))
    except Exception as exc:   # what the CLI maps to a one-line error too (netlink, timeouts); else a bug
        mapped = from_foreign(exc)
        if mapped is None:
            raise
        module.fail_json(msg=str(mapped).splitlines()[0], exit_code=int(mapped.status))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
