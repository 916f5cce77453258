"""Is this process allowed to load BPF programs and change links?"""

from __future__ import annotations

import os

from ..errors import EnvironmentProblem

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_BPF = 39


def effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def require_privileges() -> None:
    caps = effective_caps()
    has = lambda c: bool(caps >> c & 1)  # noqa: E731
    if has(CAP_NET_ADMIN) and (has(CAP_BPF) or has(CAP_SYS_ADMIN)):
        return
    who = "root without the capabilities" if os.geteuid() == 0 else "not root"
    raise EnvironmentProblem(
        f"faultinj needs CAP_BPF and CAP_NET_ADMIN ({who}): run it as root, e.g. with sudo"
    )
