"""Kernels for guests: a Debian kernel package fetched with apt and unpacked
into faultinj's cache, the user's own build given as a path (with its
modules), or `host`, this machine's running kernel (no guest is booted).

A package name is any kernel image package apt lists:
  linux-image-6.1.0-57-amd64, linux-image-6.12.118+deb12-amd64 (versioned),
  linux-image-amd64, linux-image-6.12-amd64 (metapackages: resolved, through
  `apt-cache depends`, to the versioned package they name today).
A path is `/path/bzImage[:/path/modules]`: a bzImage (its release is read
from its boot header), with the directory holding <release>/ (or
<release>/ itself); without one, ../lib/modules/<release> beside the image
is used when it exists (an unpacked package).

`kernel_range` lists the versioned packages of one flavour between two, in
Debian version order: the candidates `bisect` boots.

The guest sees the modules at /lib/modules/<release> through a read-only
virtme-ng directory: nothing is installed on this machine."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import EnvironmentProblem, SpecError
from ..kernel.build import cache_dir

HOST = "host"
# linux-image-<abi>-<flavour>: 6.1.0-57 / 6.12.118+deb12 / 6.8.0-45 (Ubuntu), then amd64, cloud-amd64, rt-amd64...
_PACKAGE = re.compile(r"^linux-image-(?P<release>(?P<abi>\d+\.\d+\.\d+(?:\+deb\d+|-\d+)?)"
                      r"-(?P<flavour>[a-z][a-z0-9]*(?:-[a-z][a-z0-9]*)*?))(?P<unsigned>-unsigned)?$")
# linux-image-amd64, linux-image-cloud-amd64, linux-image-6.12-amd64, linux-image-6.12-rt-amd64
_META = re.compile(r"^linux-image-(?:\d+\.\d+-)?[a-z][a-z0-9]*(?:-[a-z][a-z0-9]*)*$")
_HINT = ("(e.g. linux-image-6.1.0-57-amd64, linux-image-6.12.118+deb12-amd64, linux-image-amd64, "
         "/path/bzImage[:/path/modules] or 'host'; 'apt-cache search --names-only ^linux-image' lists the packages)")


@dataclass(frozen=True)
class Kernel:
    name: str            # as the user gave it (a metapackage: the versioned package it names)
    release: str         # uname -r in the guest
    vmlinuz: Path | None  # None: the host itself, no guest
    modules: Path | None  # the directory holding <release>/ (None: a kernel without modules)
    package: str | None = None   # the Debian package, when it is one
    version: str | None = None   # its Debian version, when apt knows it

    @property
    def is_host(self) -> bool:
        return self.vmlinuz is None

    @property
    def label(self) -> str:
        """Short name for a column: the package's ABI+flavour, the release for a path, 'host'."""
        if self.is_host:
            return HOST
        if self.package:
            return self.package.removeprefix("linux-image-")
        return self.release or self.vmlinuz.name

    def to_json(self) -> dict:
        return {"name": self.name, "release": self.release, "vmlinuz": str(self.vmlinuz) if self.vmlinuz else None,
                "modules": str(self.modules) if self.modules else None, "package": self.package,
                "version": self.version}


def short_name(name: str) -> str:
    """A column's heading: a versioned package by its ABI and flavour (6.1.0-57-amd64), a path by its
    file name, anything else (a metapackage, 'host') as given."""
    if is_path(name):
        return os.path.basename(name.partition(":")[0])
    return name.removeprefix("linux-image-") if _PACKAGE.match(name) else name


def _cache() -> Path:
    return cache_dir() / "kernels"


def is_path(name: str) -> bool:
    return os.path.sep in name or name.startswith(".")


def resolve(name: str, progress=lambda m: None) -> Kernel:
    """A Kernel ready to boot: a package (fetched once into the cache), a path, or 'host'.
    Bad names raise SpecError (one line, exit 2) before anything is fetched or booted."""
    name = name.strip()
    if name == HOST:
        return Kernel(HOST, os.uname().release, None, None)
    if is_path(name):
        return _from_path(name)
    package = package_name(name)
    m = _PACKAGE.match(package)
    release = m.group("release")
    root = _cache() / package
    vmlinuz = root / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.exists():
        if debian_version(package) is None:
            raise SpecError(f"cannot fetch kernel package {package}: apt knows no such package {_HINT}; "
                            "run 'apt-get update' if it is new")
        _fetch(package, root, progress)
    return Kernel(name, release, vmlinuz, root / "lib" / "modules", package)


def check(name: str) -> None:
    """A kernel name checked without fetching or booting: its form, apt's lists for a package not yet
    in the cache, a path's boot header. SpecError (exit 2) otherwise."""
    name = name.strip()
    if name == HOST:
        return
    if is_path(name):
        _from_path(name)
        return
    package = package_name(name)
    if not (_cache() / package / "boot").is_dir() and debian_version(package) is None:
        raise SpecError(f"cannot fetch kernel package {package}: apt knows no such package {_HINT}; "
                        "run 'apt-get update' if it is new")


def package_name(name: str) -> str:
    """The versioned package a name stands for: itself, or the one a metapackage depends on.
    Checks the form only (and apt, for a metapackage); SpecError for anything else."""
    if name.endswith("-dbg"):
        raise SpecError(f"'{name}' is a debug-symbols package, not a kernel: drop '-dbg' {_HINT}")
    if _PACKAGE.match(name):
        return name
    if _META.match(name):
        dep = _metapackage_target(name)
        if dep:
            return dep
        raise SpecError(f"apt knows no kernel metapackage '{name}' {_HINT}; run 'apt-get update' if it is new")
    raise SpecError(f"kernel '{name}' is neither a vmlinuz path nor a Debian kernel package name {_HINT}")


def _metapackage_target(meta: str) -> str | None:
    if not shutil.which("apt-cache"):
        raise EnvironmentProblem(f"resolving {meta} needs apt-cache (a Debian/Ubuntu machine); "
                                 "name a versioned package or give a kernel image path")
    proc = subprocess.run(["apt-cache", "depends", meta], capture_output=True, text=True, timeout=60)
    for line in proc.stdout.splitlines():
        dep = line.split(":", 1)[-1].strip()
        if line.strip().startswith("Depends:") and _PACKAGE.match(dep):
            return dep
    return None


def current_debian_kernel() -> str:
    """The versioned package that Debian's linux-image-amd64 depends on (apt's lists)."""
    dep = _metapackage_target("linux-image-amd64")
    if not dep:
        raise EnvironmentProblem("apt knows no linux-image-amd64: run 'apt-get update', or name a kernel package "
                                 "(linux-image-6.1.0-NN-amd64) or a kernel image path")
    return dep


# --- a user's own build -------------------------------------------------------------------------

def bzimage_release(path: Path) -> str | None:
    """The release string in an x86 bzImage's boot header (kernel_version, boot protocol >= 2.00),
    or None when the file is not a bzImage."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x4000)
            if len(head) < 0x210 or head[0x1FE:0x200] != b"\x55\xaa" or head[0x202:0x206] != b"HdrS":
                return None
            ptr = int.from_bytes(head[0x20E:0x210], "little")
            if not ptr:
                return ""
            f.seek(ptr + 0x200)
            text = f.read(256).split(b"\0", 1)[0].decode("ascii", "replace")
    except OSError:
        return None
    return text.split(" ", 1)[0]


def _from_path(spec: str) -> Kernel:
    image, _, mods = spec.partition(":")
    p = Path(image).expanduser()
    if not p.is_file():
        raise SpecError(f"kernel image {image} not found: give a bzImage/vmlinuz file[:modules dir] "
                        "or a Debian package name")
    release = bzimage_release(p)
    if release is None:
        raise SpecError(f"{image} is not a bootable x86 kernel image (no bzImage header): give arch/x86/boot/bzImage "
                        "or a vmlinuz-* file, not the ELF vmlinux")
    if not release:
        m = re.match(r"vmlinuz-(.+)$", p.name)
        release = m.group(1) if m else ""
    p = p.resolve()
    if mods:
        d = Path(mods).expanduser().resolve()
        if release and (d / release).is_dir():
            modules = d
        elif release and d.name == release and d.is_dir():
            modules = d.parent
        else:
            raise SpecError(f"modules directory {mods} holds no {release or 'release'}/ for {image}: give the "
                            "directory made by 'make modules_install INSTALL_MOD_PATH=X' (X/lib/modules)")
    else:
        d = p.parent.parent / "lib" / "modules"
        modules = d if release and (d / release).is_dir() else None
    return Kernel(spec, release, p, modules)


# --- apt: fetching, versions, ranges ------------------------------------------------------------

def _fetch(package: str, root: Path, progress) -> None:
    for tool in ("apt-get", "dpkg"):
        if not shutil.which(tool):
            raise EnvironmentProblem(f"fetching a kernel package needs {tool} (a Debian/Ubuntu machine); "
                                     "or give a kernel image path")
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


def _madison(packages: list[str]) -> dict[str, str]:
    """{package: its highest Debian version apt offers}, one apt-cache call for all."""
    if not packages or not shutil.which("apt-cache"):
        return {}
    proc = subprocess.run(["apt-cache", "madison", *packages], capture_output=True, text=True, timeout=120)
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        parts = [x.strip() for x in line.split("|")]
        if len(parts) >= 3 and parts[0] in packages and "Packages" in parts[2]:
            if parts[0] not in out or compare_versions(parts[1], out[parts[0]]) > 0:
                out[parts[0]] = parts[1]
    return out


def debian_version(package: str) -> str | None:
    return _madison([package]).get(package)


@functools.lru_cache(maxsize=8)
def _versions_of_flavour(flavour: str) -> dict[str, str]:
    """{package: version} of every versioned kernel package of that flavour apt lists (read once
    per process: apt's lists do not change under a bisect)."""
    return _madison(_kernel_packages(flavour))


def _kernel_packages(flavour: str) -> list[str]:
    proc = subprocess.run(["apt-cache", "pkgnames", "linux-image-"], capture_output=True, text=True, timeout=120)
    names = []
    for n in proc.stdout.split():
        m = _PACKAGE.match(n)
        if m and m.group("flavour") == flavour and not m.group("unsigned"):
            names.append(n)
    return names


def kernel_range(first: str, last: str) -> list[tuple[str, str]]:
    """[(package, Debian version)] of every versioned kernel package of first's flavour from first to
    last inclusive, ordered from first to last (either may be the older). Metapackages are resolved.
    SpecError when the two differ in flavour (amd64 vs cloud-amd64), are the same, or apt lacks one."""
    a, b = package_name(first), package_name(last)
    fa, fb = _PACKAGE.match(a).group("flavour"), _PACKAGE.match(b).group("flavour")
    if fa != fb:
        raise SpecError(f"{first} and {last} are different flavours ({fa}, {fb}): a range keeps one flavour")
    if a == b:
        raise SpecError(f"{first} and {last} are the same kernel ({a}): give two different versions")
    versions = _versions_of_flavour(fa)
    for p in (a, b):
        if p not in versions:
            raise SpecError(f"apt knows no kernel package '{p}' {_HINT}; run 'apt-get update' if it is new")
    lo, hi = sorted((versions[a], versions[b]), key=_VersionKey)
    chosen = sorted(((p, v) for p, v in versions.items()
                     if compare_versions(lo, v) <= 0 <= compare_versions(hi, v)),
                    key=lambda pv: _VersionKey(pv[1]))
    return chosen if versions[a] == lo else chosen[::-1]


# --- Debian version order (deb-version(7)), so that no python-apt is needed --------------------

def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return -1 if first_diff < 0 else 1
    return 0


def _split(v: str) -> tuple[int, str, str]:
    epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch or 0), upstream, revision


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian orders versions a and b (what `dpkg --compare-versions` says)."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


class _VersionKey:
    def __init__(self, v: str):
        self.v = v

    def __lt__(self, other: "_VersionKey") -> bool:
        return compare_versions(self.v, other.v) < 0
