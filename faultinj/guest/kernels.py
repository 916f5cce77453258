"""Kernels for guests: a Debian kernel package fetched with apt and unpacked
into faultinj's cache, or a vmlinuz path given by the user (with its modules).

The guest sees the modules at /lib/modules/<release> through a read-only
virtme-ng directory: nothing is installed on this machine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import EnvironmentProblem, SpecError

_PACKAGE = re.compile(r"^linux-image-(\d+\.\d+\.\d+-\d+-[a-z0-9-]+)$")


@dataclass(frozen=True)
class Kernel:
    name: str            # as the user gave it
    release: str         # uname -r in the guest
    vmlinuz: Path
    modules: Path | None  # the directory holding <release>/ (None: a kernel without modules)

    def to_json(self) -> dict:
        return {"name": self.name, "release": self.release, "vmlinuz": str(self.vmlinuz),
                "modules": str(self.modules) if self.modules else None}


def _cache() -> Path:
    from ..inject.build import cache_dir

    return cache_dir() / "kernels"


def resolve(name: str, progress=lambda m: None) -> Kernel:
    """'linux-image-6.1.0-57-amd64' (fetched once), or a path to a vmlinuz whose
    modules sit at ../lib/modules/<release> (an unpacked package) or nowhere."""
    if os.path.sep in name or name.startswith("."):
        return _from_path(name)
    if name == "linux-image-amd64":   # Debian's metapackage: the versioned kernel it names today
        name = current_debian_kernel()
    m = _PACKAGE.match(name)
    if not m:
        raise SpecError(f"kernel '{name}' is neither a vmlinuz path nor a Debian kernel package name "
                        "(e.g. linux-image-6.1.0-57-amd64; 'apt-cache search linux-image' lists them)")
    release = m.group(1)
    root = _cache() / name
    vmlinuz = root / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.exists():
        _fetch(name, root, progress)
    return Kernel(name, release, vmlinuz, root / "lib" / "modules")


def current_debian_kernel() -> str:
    """The versioned package that Debian's linux-image-amd64 depends on (apt's lists)."""
    proc = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        dep = line.split(":", 1)[-1].strip()
        if line.strip().startswith("Depends:") and _PACKAGE.match(dep):
            return dep
    raise EnvironmentProblem("apt knows no linux-image-amd64: run 'apt-get update', or name a kernel package "
                             "(linux-image-6.1.0-NN-amd64) or a vmlinuz path")


def _from_path(path: str) -> Kernel:
    p = Path(path).resolve()
    if not p.is_file():
        raise SpecError(f"kernel image {path} not found: give a vmlinuz file or a Debian package name")
    m = re.match(r"vmlinuz-(.+)$", p.name)
    release = m.group(1) if m else ""
    mods = p.parent.parent / "lib" / "modules"
    return Kernel(path, release, p, mods if release and (mods / release).is_dir() else None)


def _fetch(package: str, root: Path, progress) -> None:
    for tool in ("apt-get", "dpkg"):
        if not shutil.which(tool):
            raise EnvironmentProblem(f"fetching a kernel package needs {tool} (a Debian/Ubuntu machine); "
                                     "or give a vmlinuz path")
    progress(f"fetching {package} with apt (once; cached in {root.parent})")
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        proc = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True,
                              timeout=600)
        debs = list(Path(tmp).glob("*.deb"))
        if proc.returncode != 0 or not debs:
            why = (proc.stderr.strip().splitlines() or ["no package downloaded"])[-1]
            raise SpecError(f"cannot fetch kernel package {package} ({why}): check the name with "
                            "'apt-cache policy linux-image-amd64' (run 'apt-get update' first)")
        unpacked = Path(tmp) / "root"
        subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], check=True, capture_output=True, timeout=600)
        shutil.rmtree(root, ignore_errors=True)
        os.replace(unpacked, root)   # all or nothing: a killed fetch leaves no half kernel
