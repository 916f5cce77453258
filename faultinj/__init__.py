"""faultinj: reproduce network bugs with eBPF fault injection, verified.

    import faultinj
    rec = faultinj.apply("psh-ratio=10", "veth0", netns_name="lab1", seed=42)
    print(faultinj.status())
    faultinj.clear("veth0", netns_name="lab1")
"""

__version__ = "0.1.0"

from .api import apply, clear, reap, set_fault, status  # noqa: E402
from .errors import FaultinjError  # noqa: E402
from .faults import CATALOGUE, parse_spec  # noqa: E402

__all__ = ["apply", "clear", "reap", "set_fault", "status", "FaultinjError", "CATALOGUE", "parse_spec",
           "__version__"]
