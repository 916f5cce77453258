#!/usr/bin/python
# GNU General Public License v2.0 only (see the faultinj project)
"""faultinj.net.scenario: run a faultinj scenario file on the managed host."""

from __future__ import annotations

DOCUMENTATION = r"""
module: scenario
short_description: Run a faultinj scenario on the host and return its verdicts
description:
  - Runs C(faultinj run PATH --json) on the managed host - lab up, faults, traffic, captures,
    verdicts, teardown - and returns every verdict. The task fails when an expectation fails, its
    message naming each failed expectation with what was observed and expected.
  - Nothing is left behind (the lab is torn down), so the task reports no change.
  - In check mode the file is only checked (every mistake as file:line:column), nothing runs.
  - faultinj must be importable by the Python Ansible runs on the host (ansible_python_interpreter).
options:
  path:
    description: The scenario file, on the managed host.
    type: path
    required: true
  pcap_dir:
    description: Where the run's captures are saved, on the host (default a faultinj-captures directory
      in the task's working directory).
    type: path
  timeout:
    description: Seconds the run may take before it is stopped (its lab is torn down then too).
    type: int
    default: 1800
"""

EXAMPLES = r"""
- name: the psh-ratio scenario
  faultinj.net.scenario:
    path: /opt/faultinj/scenarios/psh-ratio.yaml
  register: run
- debug: var=run.checks
"""

RETURN = r"""
ok:
  description: Whether every expectation held.
  type: bool
scenario:
  description: The scenario's name.
  type: str
checks:
  description: Every expectation - name, ok, observed, expected, ci.
  type: list
counters:
  description: Each fault's counters at the end of the run.
  type: dict
report:
  description: faultinj's whole JSON report of the run.
  type: dict
"""

import json
import subprocess
import sys

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(path=dict(type="path", required=True), pcap_dir=dict(type="path"),
                           timeout=dict(type="int", default=1800)),
        supports_check_mode=True,
    )
    p = module.params
    try:
        from faultinj.errors import FaultinjError
        from faultinj.scenario import load
    except ImportError as exc:
        module.fail_json(msg=f"faultinj is not importable by {sys.executable} ({exc}): install faultinj there, or "
                             "set ansible_python_interpreter to the Python it is installed in")
    if module.check_mode:
        try:
            scn = load(p["path"])
        except FaultinjError as exc:
            module.fail_json(msg=str(exc).splitlines()[0], errors=getattr(exc, "all_lines", None) or [str(exc)],
                             exit_code=int(exc.status))
        module.exit_json(changed=False, ok=None, scenario=scn.name, checks=[], msg="checked, not run (check mode)")
    argv = [sys.executable, "-m", "faultinj.cli", "run", p["path"], "--json"]
    if p["pcap_dir"]:
        argv += ["--pcap-dir", p["pcap_dir"]]
    try:
        # a new session: a timeout stops faultinj run (SIGINT: it tears its lab down) and nothing else
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        out, err = proc.communicate(timeout=p["timeout"])
    except subprocess.TimeoutExpired:
        import signal

        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate()
        module.fail_json(msg=f"faultinj run {p['path']} did not finish within {p['timeout']} s (stopped)",
                         stderr=err)
    try:
        data = json.loads(out)
    except ValueError:
        module.fail_json(msg=f"faultinj run gave no JSON (exit {proc.returncode}): "
                             f"{(err.strip().splitlines() or ['?'])[-1]}", stderr=err, rc=proc.returncode)
    if isinstance(data, dict) and "error" in data:   # faultinj's one-line error (bad file, environment)
        module.fail_json(msg=data["error"], errors=data.get("errors") or [data["error"]], exit_code=data["exit_code"],
                         stderr=err, rc=proc.returncode)
    report = data[0]
    result = dict(changed=False, ok=report["ok"], scenario=report["scenario"], checks=report["checks"],
                  counters=report["counters"], report=report, rc=proc.returncode)
    if not report["ok"]:
        failed = [f"{c['name']}: observed {c['observed']}, expected {c['expected']}"
                  for c in report["checks"] if not c["ok"]] + list(report.get("errors") or [])
        module.fail_json(msg=f"scenario {report['scenario']}: FAIL: " + "; ".join(failed), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
