"""Scenarios: a YAML file describes a lab, faults, traffic, captures and what
must be observed; `faultinj run` builds, runs, judges and tears it down."""

import os

from .schema import Scenario, ScenarioError, load, loads

__all__ = ["Scenario", "ScenarioError", "load", "loads", "run", "run_matrix", "compare", "bisect", "run_files",
           "schema_reference", "lab_up", "lab_down", "lab_status"]


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


def run_files(files, **kwargs):
    """What `faultinj run FILE...` does (flags checked, files read, then run): scenario/runfiles.py."""
    from .runfiles import run_files as _f

    return _f(files, **kwargs)


def schema_reference() -> str:
    """The scenario file reference (`faultinj run --schema`, docs/scenarios.md)."""
    from .reference import render

    return render()


def lab_up(path_or_scenario, **kwargs) -> dict:
    """Build a scenario's lab and leave it up (`faultinj lab up`)."""
    from .runner import lab_up as _up

    scn = path_or_scenario if isinstance(path_or_scenario, Scenario) else load(path_or_scenario)
    return _up(scn, **kwargs)


def lab_down(file_or_name: str) -> dict:
    """Remove a lab left up, named by its scenario file or by its name (`faultinj lab down`)."""
    from .runner import lab_down as _down

    return _down(load(file_or_name).name if os.path.isfile(file_or_name) else file_or_name)


def lab_status() -> list[dict]:
    """The labs that are up (`faultinj lab status`)."""
    from .runner import lab_status as _status

    return _status()
