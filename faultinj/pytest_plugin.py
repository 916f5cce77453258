"""pytest fixtures for external test suites (an OVS test suite, say):

    def test_survives_psh(fi_fault):
        rec = fi_fault("psh-ratio=10", "eth0", netns_name="vm1")
        ...                                  # cleared after the test, pass or fail

    def test_in_a_lab(fi_lab):
        topo = fi_lab("scenarios/bridge-lab.yaml")   # torn down after the test
"""

from __future__ import annotations

import pytest

import faultinj


@pytest.fixture
def fi_fault():
    applied = []

    def make(spec, ifname, **kwargs):
        rec = faultinj.apply(spec, ifname, **kwargs)
        applied.append(rec)
        return rec

    yield make
    for rec in reversed(applied):
        try:
            faultinj.clear(fault_id=rec.id)
        except faultinj.FaultinjError:
            pass  # already cleared by the test


@pytest.fixture
def fi_lab():
    labs = []

    def make(scenario_path=None, prefix=None):
        lab = faultinj.lab(scenario_path, prefix)
        labs.append(lab)
        return lab

    yield make
    for lab in reversed(labs):
        lab.down()
