"""Compile bpf/<program>.bpf.c for one hook with clang, cached.

The cache key hashes the program's source, every header in bpf/lib, the
libbpf headers it includes, the flags and the clang binary (path, size,
mtime), so a cache hit runs no clang at all. Sources are copied into a
private temporary directory and compiled there, clang called with an
argument list (no shell).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

try:   # hashlib.blake2b is this one; hashlib itself loads OpenSSL first (~2 ms of every apply)
    from _blake2 import blake2b
except ImportError:   # pragma: no cover  (an interpreter built without it)
    from hashlib import blake2b

from ..errors import BuildError, EnvironmentProblem, ProgramError
from . import layout

# -fno-strict-aliasing: a TTL/protocol word read through a u16 * before and
# after the TTL write was miscompiled without it. BPF_NO_PRESERVE_ACCESS_INDEX:
# our programs touch only packet data, and CO-RE relocations cost load time.
CFLAGS = ("-O2", "-g", "-target", "bpf", "-fno-strict-aliasing", "-Wall", "-Werror",
          "-DBPF_NO_PRESERVE_ACCESS_INDEX")
LIBBPF_HEADERS = ("bpf_helpers.h", "bpf_helper_defs.h", "bpf_endian.h", "bpf_core_read.h", "bpf_tracing.h")
# "trace": the tracer's programs (tracepoints, no packet hook)
HOOK_DEFINES = {"xdp": "-DFI_HOOK_XDP", "tc-ingress": "-DFI_HOOK_TC", "tc-egress": "-DFI_HOOK_TC",
                "trace": "-DFI_TRACER"}


def bpf_dir() -> Path:
    """bpf/ inside the installed wheel, else the source tree's (editable install)."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here / "bpf", here.parent / "bpf"):
        if (cand / "lib" / "fault.h").is_file():
            return cand
    raise EnvironmentProblem(f"faultinj's BPF sources are missing (looked in {here / 'bpf'}): reinstall faultinj")


def cache_dir() -> Path:
    if os.environ.get("FAULTINJ_CACHE_DIR"):
        return Path(os.environ["FAULTINJ_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "faultinj"


def _clang() -> str:
    path = shutil.which(os.environ.get("FAULTINJ_CLANG", "clang"))
    if not path:
        raise EnvironmentProblem("clang not found: install it (apt-get install clang) or set FAULTINJ_CLANG")
    return os.path.realpath(path)


def _libbpf_include() -> Path:
    for d in (Path("/usr/include/bpf"), Path("/usr/local/include/bpf")):
        if (d / "bpf_helpers.h").is_file():
            return d
    raise EnvironmentProblem("libbpf headers not found (bpf/bpf_helpers.h): install libbpf-dev")


def _key(source: Path, src_dir: Path, flags: tuple[str, ...], clang: str, inc: Path) -> str:
    h = blake2b(digest_size=10)
    # layouts.py, layout.py: an object is checked against them when built, so a change there builds anew
    files = [source, *sorted((src_dir / "lib").glob("*.h")), Path(__file__).with_name("layout.py"),
             Path(layout.layouts.__file__)] + \
        [inc / n for n in LIBBPF_HEADERS]
    for f in files:
        h.update(f.name.encode() + b"\0")
        h.update(f.read_bytes())
    st = os.stat(clang)
    h.update(f"{clang}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    h.update("\0".join(flags).encode())
    return h.hexdigest()


def compile_program(program: str, hook: str, source: Path | None = None, act: bool = False,
                    tcx: bool = False, layouts: bool = False) -> Path:
    """Return the path of the object for program on hook, compiling it on a miss.
    act: for a tc action (matchall + act_bpf) rather than a cls_bpf filter (verdicts differ);
    tcx: for a tcx link (its verdicts differ too: bpf/lib/ctx.h); layouts: with -DFI_LAYOUTS, the
    program's FI_LAYOUT types in its BTF (never loaded: see _check_anchors)."""
    src_dir = bpf_dir()
    source = source or src_dir / f"{program}.bpf.c"
    if not source.is_file():
        raise BuildError(f"no BPF source for '{program}' ({source})")
    clang = _clang()
    inc = _libbpf_include()
    flags = CFLAGS + (HOOK_DEFINES[hook],) + (("-DFI_TC_ACT",) if act else ()) + (("-DFI_TCX",) if tcx else ()) + \
        (("-DFI_LAYOUTS",) if layouts else ())
    key = _key(source, src_dir, flags, clang, inc)
    out_dir = cache_dir()
    kind = "layouts" if layouts else "act" if act else "tcx" if tcx else hook.split("-")[0]
    obj = out_dir / f"{program}.{kind}.{key}.o"
    if obj.is_file():
        return obj
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    import tempfile   # on a miss only: tempfile loads random (a cache hit, every apply, needs neither)

    with tempfile.TemporaryDirectory(prefix="faultinj-build-") as tmp:
        tmp_obj = _clang_compile(clang, flags, inc, src_dir, source, hook, Path(tmp))
        # C and Python agree on every shared struct and enum, or no object
        anchored = program == layout.ANCHOR or layouts
        layout.check(str(tmp_obj), source.name, program if anchored else None)
        if not anchored:
            _check_anchors(program, source, src_dir)
        fd, staged = tempfile.mkstemp(dir=out_dir, prefix=".tmp-", suffix=".o")
        os.close(fd)
        shutil.copyfile(tmp_obj, staged)
        os.replace(staged, obj)  # atomic: a concurrent build never sees half a file
    return obj


def _check_anchors(program: str, source: Path, src_dir: Path) -> None:
    """The types no loaded program's BTF carries (enums whose constants alone are used), in the
    objects that carry them (each cached, so checked once per change): bpf/lib/layouts.c's, and the
    program's own built with -DFI_LAYOUTS when it names any (FI_LAYOUT) or layouts.py says it did."""
    compile_program(layout.ANCHOR, "tc-egress", src_dir / "lib" / f"{layout.ANCHOR}.c")
    if _has_anchor(source) or program in layout.layouts.ANCHORS:
        compile_program(program, "tc-egress", source, layouts=True)


def _has_anchor(source: Path) -> bool:
    return "FI_LAYOUT(" in source.read_text()


def _clang_compile(clang: str, flags: tuple[str, ...], inc: Path, src_dir: Path, source: Path, hook: str,
                   work: Path) -> Path:
    """Compile source (with a copy of bpf/lib) in the directory work: work/out.o."""
    shutil.copytree(src_dir / "lib", work / "lib")
    shutil.copy2(source, work / source.name)
    tmp_obj = work / "out.o"
    cmd = [clang, *flags, "-I", str(work), "-I", str(inc.parent), "-c", str(work / source.name), "-o", str(tmp_obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    if proc.returncode != 0:
        msg = proc.stderr.replace(str(work) + "/", "").strip()
        first = next((ln for ln in msg.splitlines() if ": error:" in ln), msg.splitlines()[0] if msg else "")
        raise BuildError(f"clang failed to compile {source.name} for {hook}: {first}\n{msg}")
    return tmp_obj


def layouts_text(src_dir: Path | None = None) -> str:
    """faultinj/layouts.py as the BTF says: of bpf/lib/layouts.c, and of every bpf/X.bpf.c naming
    its own types (FI_LAYOUT) built with -DFI_LAYOUTS (compiled unchecked, not cached)."""
    src_dir = src_dir or bpf_dir()
    clang, inc = _clang(), _libbpf_include()
    flags = CFLAGS + (HOOK_DEFINES["tc-egress"],)
    sources = {layout.ANCHOR: (src_dir / "lib" / f"{layout.ANCHOR}.c", flags)}
    for src in sorted(src_dir.glob("*.bpf.c")):
        if _has_anchor(src):
            sources[src.name.removesuffix(".bpf.c")] = (src, flags + ("-DFI_LAYOUTS",))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="faultinj-layouts-") as tmp:
        objects = {}
        for anchor, (src, fl) in sources.items():
            work = Path(tmp) / anchor
            work.mkdir()
            objects[anchor] = str(_clang_compile(clang, fl, inc, src_dir, src, "tc-egress", work))
        return layout.generated_text(objects)


def write_layouts(argv: list[str]) -> int:
    """`python -m faultinj.kernel.build layouts [--write]`: faultinj/layouts.py as the BTF says
    (layouts_text); --write rewrites it, else says whether it agrees (exit 1 when not)."""
    text = layouts_text()
    path = Path(layout.layouts.__file__)
    if "--write" in argv:
        path.write_text(text)
        print(f"wrote {path}")
        return 0
    if path.read_text() != text:
        print(f"{path} differs from what the BTF says: run `{layout.REGENERATE}`", file=sys.stderr)
        return 1
    print(f"{path} agrees with the BTF")
    return 0


def _multiarch_include() -> list[str]:
    """/usr/include/<triplet>: <asm/types.h>, which <linux/types.h> needs, lives there on Debian."""
    import platform

    d = Path("/usr/include") / f"{platform.machine()}-linux-gnu"
    return ["-I", str(d)] if d.is_dir() else []


def compile_custom(source: Path, function_sections: bool = False) -> Path:
    """Compile a user's BPF C file (not cached: its own headers are unknown to us) into a
    private temporary directory; the caller removes the returned object's directory.
    function_sections: put each function in a section of its own, for programs whose entry
    function has no SEC() (the seed article's, as printed)."""
    if not source.is_file():
        raise ProgramError(f"no such file: {source}: give the path of a BPF C source file")
    clang = _clang()
    inc = _libbpf_include()
    flags = ["-O2", "-g", "-target", "bpf", "-I", str(source.parent), "-I", str(bpf_dir() / "compat"),
             *_multiarch_include(), "-I", str(inc.parent)]
    if function_sections:
        flags.append("-ffunction-sections")
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="faultinj-custom-"))
    obj = work / (source.stem + ".o")
    proc = subprocess.run([clang, *flags, "-c", str(source), "-o", str(obj)], capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        msg = proc.stderr.strip()
        first = next((ln for ln in msg.splitlines() if ": error:" in ln), msg.splitlines()[0] if msg else "")
        raise ProgramError(f"clang failed to compile {source}: {first}\n{msg}")
    return obj


if __name__ == "__main__":
    sys.exit(write_layouts(sys.argv[1:]) if sys.argv[1:2] == ["layouts"] else 2)
