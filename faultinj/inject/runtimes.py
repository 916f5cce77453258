"""Container runtimes: which are installed, and the init PID of a container by name or id.

Every runtime's container lives in its init process's network namespace, so a PID is all faultinj
needs from a runtime; each is asked through its own CLI, never through its sockets' protocols:

- docker, podman: `inspect --type container NAME` (`State.Pid`; 0 when not running). FAULTINJ_DOCKER
  / FAULTINJ_PODMAN name the CLI, DOCKER_HOST / CONTAINER_HOST are honoured by the CLIs themselves.
- containerd: `crictl inspect ID` where crictl is installed (a CRI runtime's containers, `info.pid`),
  then `ctr -n NS task ls` in each of containerd's namespaces (`moby` holds Docker's containers by
  their full id, `k8s.io` the CRI's). containerd knows containers by id (or a unique prefix of one),
  not by the names Docker or Kubernetes give them. The socket is CONTAINERD_ADDRESS, else
  /run/containerd/containerd.sock, else the one a dockerd manages itself.

Auto-detection (no --runtime) asks the installed runtimes in the order of RUNTIMES.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass

from ..errors import EnvironmentProblem, SpecError, TargetError

RUNTIMES = ("docker", "podman", "containerd")
CONTAINERD_SOCKETS = ("/run/containerd/containerd.sock", "/run/docker/containerd/containerd.sock")


@dataclass
class Container:
    id: str
    name: str
    runtime: str
    pid: int      # 0 when not running


def _cli(name: str) -> str | None:
    """An installed CLI: FAULTINJ_<NAME> if set (and executable), else the one on PATH."""
    given = os.environ.get(f"FAULTINJ_{name.upper()}")
    if given:
        return given if os.access(given, os.X_OK) else None
    return shutil.which(name)


def containerd_address() -> str | None:
    given = os.environ.get("CONTAINERD_ADDRESS")
    if given:
        return given
    return next((s for s in CONTAINERD_SOCKETS if os.path.exists(s)), None)


def installed() -> list[str]:
    """The runtimes faultinj can ask here, in auto-detection order."""
    found = [rt for rt in ("docker", "podman") if _cli(rt)]
    if (_cli("ctr") and containerd_address()) or _cli("crictl"):
        found.append("containerd")
    return found


def _not_installed(runtime: str) -> str:
    if runtime == "containerd":
        if not (_cli("ctr") or _cli("crictl")):
            return "containerd's ctr (or crictl) is not installed"
        return ("containerd is not running here (no socket at " + " or ".join(CONTAINERD_SOCKETS)
                + "): set CONTAINERD_ADDRESS to its socket")
    return f"{runtime} is not installed (or set FAULTINJ_{runtime.upper()} to its CLI)"


def _run(argv: list[str]) -> subprocess.CompletedProcess | str:
    """The finished process, or why it could not run."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{os.path.basename(argv[0])} failed ({exc})"


def _last_line(res: subprocess.CompletedProcess) -> str:
    return (res.stderr.strip().splitlines() or res.stdout.strip().splitlines() or ["no output"])[-1]


def _inspect(runtime: str, name: str) -> tuple[Container | None, str]:
    """docker or podman: (the container, "") or (None, why not)."""
    res = _run([_cli(runtime), "inspect", "--type", "container", name])
    if isinstance(res, str):
        return None, res
    if res.returncode != 0:
        return None, f"{runtime}: {_last_line(res)}"
    try:
        data = json.loads(res.stdout)[0]
        return Container(id=data["Id"], name=data.get("Name", name).lstrip("/"), runtime=runtime,
                         pid=int(data.get("State", {}).get("Pid") or 0)), ""
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return None, f"{runtime} inspect gave unexpected output ({exc})"


def _crictl(name: str) -> tuple[Container | None, str]:
    res = _run([_cli("crictl"), "inspect", "--output", "json", name])
    if isinstance(res, str):
        return None, res
    if res.returncode != 0:
        return None, f"crictl: {_last_line(res)}"
    try:
        data = json.loads(res.stdout)
        status = data["status"]
        return Container(id=status["id"], name=status.get("metadata", {}).get("name", name), runtime="containerd",
                         pid=int(data.get("info", {}).get("pid") or 0)), ""
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"crictl inspect gave unexpected output ({exc})"


def _ctr(name: str) -> tuple[Container | None, str]:
    """The container whose id is name (or starts with it) in any containerd namespace."""
    ctr, address = _cli("ctr"), containerd_address()
    base = [ctr, "--address", address]
    res = _run(base + ["namespaces", "list", "-q"])
    if isinstance(res, str):
        return None, res
    if res.returncode != 0:
        return None, f"containerd at {address}: {_last_line(res)}"
    found: list[Container] = []
    for ns in res.stdout.split():
        ids = _run(base + ["-n", ns, "containers", "list", "-q"])
        if isinstance(ids, str) or ids.returncode != 0:
            continue
        for cid in ids.stdout.split():
            if cid == name or cid.startswith(name):
                found.append(Container(cid, cid, "containerd", _ctr_task_pid(base, ns, cid)))
    exact = [c for c in found if c.id == name]
    if exact or len(found) == 1:
        return (exact or found)[0], ""
    if found:
        return None, f"containerd: '{name}' is the start of {len(found)} container ids: give more of it"
    return None, f"containerd at {address}: no container id '{name}' (containerd knows ids, not names)"


def _ctr_task_pid(base: list[str], ns: str, cid: str) -> int:
    """The container's task's PID; 0 when it has none running."""
    res = _run(base + ["-n", ns, "task", "list"])
    if isinstance(res, str) or res.returncode != 0:
        return 0
    for line in res.stdout.splitlines()[1:]:      # TASK PID STATUS
        cols = line.split()
        if len(cols) >= 3 and cols[0] == cid and cols[2] == "RUNNING":
            return int(cols[1])
    return 0


def _ask(runtime: str, name: str) -> tuple[Container | None, str]:
    if runtime != "containerd":
        return _inspect(runtime, name)
    why = []
    if _cli("crictl"):
        found, reason = _crictl(name)
        if found:
            return found, ""
        why.append(reason)
    if _cli("ctr") and containerd_address():
        found, reason = _ctr(name)
        if found:
            return found, ""
        why.append(reason)
    return None, "; ".join(why)


def find(name: str, runtime: str | None = None) -> Container:
    """A container by name or id: from the given runtime, or from the first installed one that knows it."""
    if not name or name.startswith("-"):
        raise SpecError(f"bad container name '{name}'")
    if runtime is not None and runtime not in RUNTIMES:
        raise SpecError(f"unknown runtime '{runtime}': give one of {', '.join(RUNTIMES)}")
    here = installed()
    if runtime and runtime not in here:
        raise EnvironmentProblem(_not_installed(runtime))
    if not here:
        raise EnvironmentProblem("no container runtime here: install docker, podman or containerd's ctr "
                                 "(or set FAULTINJ_DOCKER / FAULTINJ_PODMAN to a CLI)")
    why = []
    for rt in [runtime] if runtime else here:
        found, reason = _ask(rt, name)
        if found:
            return found
        why.append(reason)
    raise TargetError(f"no container '{name}' ({'; '.join(why)})")
