"""Scenarios: a YAML file describes a lab, faults, traffic, captures and what
must be observed; `faultinj run` builds, runs, judges and tears it down."""

from .schema import Scenario, ScenarioError, load, loads

__all__ = ["Scenario", "ScenarioError", "load", "loads", "run", "run_matrix", "compare", "bisect"]


def run(path_or_scenario, **kwargs):
    from .runner import run as _run

    scn = path_or_scenario if isinstance(path_or_scenario, Scenario) else load(path_or_scenario)
    return _run(scn, **kwargs)


def run_matrix(path_or_scenario, sides, **kwargs):
    """The scenario on each side (kernel and/or OVS build): scenario/matrix.py."""
    from .matrix import run_matrix as _m

    scn = path_or_scenario if isinstance(path_or_scenario, Scenario) else load(path_or_scenario)
    return _m(scn, sides, **kwargs)


def compare(path_or_scenario, before, after, **kwargs):
    from .matrix import compare as _c

    scn = path_or_scenario if isinstance(path_or_scenario, Scenario) else load(path_or_scenario)
    return _c(scn, before, after, **kwargs)


def bisect(path_or_scenario, good, bad, **kwargs):
    from .matrix import bisect as _b

    scn = path_or_scenario if isinstance(path_or_scenario, Scenario) else load(path_or_scenario)
    return _b(scn, good, bad, **kwargs)
