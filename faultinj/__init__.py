"""faultinj: reproduce network bugs with eBPF fault injection, verified.

    import faultinj
    rec = faultinj.apply("psh-ratio=10", "veth0", netns_name="lab1", seed=42)
    print(faultinj.status())
    faultinj.clear("veth0", netns_name="lab1")
"""

from ._version import __version__  # noqa: E402,F401

from .errors import FaultinjError  # noqa: E402

# The API is imported when first used (PEP 562): `faultinj --help` or `faultinj.errors` need not load
# the catalogue, libbpf's binding and the kernel code (a command answers sooner).
_LAZY = {"apply": "api", "apply_program": "api", "clear": "api", "fault": "api", "reap": "api", "set_fault": "api",
         "status": "api", "CATALOGUE": "faults", "parse_spec": "faults",
         # one scenario across kernels and OVS builds (scenario/matrix.py)
         "run_matrix": "scenario", "compare": "scenario", "bisect": "scenario"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'faultinj' has no attribute {name!r}")

__all__ = ["apply", "apply_program", "bisect", "clear", "compare", "run_matrix", "fault", "lab", "reap", "set_fault", "status", "FaultinjError", "CATALOGUE", "parse_spec",
           "__version__"]


def lab(scenario_path=None, prefix=None):
    """A lab as a context manager: a scenario file's topology, or the two-host lab.

        with faultinj.lab("scenarios/bridge-lab.yaml") as topo:
            topo.netns("vm1")
    """
    if scenario_path is None:
        from .labs import Lab

        return Lab(prefix).up()
    from .labs import Topology
    from .scenario import load

    return Topology(load(scenario_path).lab, prefix).up()
