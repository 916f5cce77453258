"""faultinj: reproduce network bugs with eBPF fault injection, verified.

    import faultinj
    rec = faultinj.apply("psh-ratio=10", "veth0", netns_name="lab1", seed=42)
    print(faultinj.status())
    faultinj.clear("veth0", netns_name="lab1")
"""

__version__ = "0.1.0"

from .api import apply, apply_program, clear, fault, reap, set_fault, status  # noqa: E402
from .errors import FaultinjError  # noqa: E402
from .faults import CATALOGUE, parse_spec  # noqa: E402

__all__ = ["apply", "apply_program", "clear", "fault", "lab", "reap", "set_fault", "status", "FaultinjError", "CATALOGUE", "parse_spec",
           "__version__"]


def lab(scenario_path=None, prefix=None):
    """A lab as a context manager: a scenario file's topology, or the two-host lab.

        with faultinj.lab("scenarios/bridge-lab.yaml") as topo:
            topo.netns("vm1")
    """
    if scenario_path is None:
        from .inject.lab import Lab

        return Lab(prefix).up()
    from .inject.lab import Topology
    from .scenario import load

    return Topology(load(scenario_path).lab, prefix).up()
