"""Scenarios: a YAML file describes a lab, faults, traffic, captures and what
must be observed; `faultinj run` builds, runs, judges and tears it down."""

from .schema import Scenario, ScenarioError, load, loads

__all__ = ["Scenario", "ScenarioError", "load", "loads", "run"]


def run(path_or_scenario, **kwargs):
    from .runner import run as _run

    scn = path_or_scenario if isinstance(path_or_scenario, Scenario) else load(path_or_scenario)
    return _run(scn, **kwargs)
