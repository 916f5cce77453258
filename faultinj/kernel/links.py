"""Attach through libbpf: tcx and XDP links pinned in the fault's directory, tc filters
(bpf_tc_hook_create/attach/query/detach) and XDP (bpf_xdp_attach/query) where the kernel has no
links. matchall + act_bpf stays with pyroute2 (attach.py): libbpf has no API for it.

Attach kinds (a record's `attach_kind`, what `status` shows):
  tcx-link   tc hook through a bpf_link (kernel 6.6+): pinned as <pin dir>/link; clearing is unpinning.
             Another tool's tc filter, tcx program or link cannot replace or remove it by accident.
  tc-filter  cls_bpf direct-action filter on clsact, made by libbpf; ours is the filter at
             (handle 1, our priority) whose program id is ours (asked of the kernel, not by name).
  xdp-link   XDP through a bpf_link (kernel 5.9+), pinned like tcx; the kernel refuses any other
             XDP attach on the link while it exists (even `ip -force link set ... xdp`).
  xdp        XDP through netlink (libbpf), detached only with XDP_FLAGS_REPLACE and our program.
  tc-matchall  matchall + act_bpf through pyroute2 (--tc-mode matchall).

libbpf calls that take an ifindex resolve it in this thread's network namespace: every such call
runs inside netns.entered(). Only calls of libbpf 1.1 (Debian bookworm) are used:
bpf_program__attach_tcx is 1.3+, so tcx links are made with bpf_link_create.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct

from ..errors import FaultinjError, KernelFeatureMissing, SpecError, StateError
from . import libbpf, netns

ATTACH_CHOICES = ("auto", "link", "netlink")

BPF_XDP = 37
BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47
TCX_ATTACH = {"tc-ingress": BPF_TCX_INGRESS, "tc-egress": BPF_TCX_EGRESS}
BPF_LINK_TYPE_XDP, BPF_LINK_TYPE_TCX = 6, 11
# mprog placement flags (uapi/linux/bpf.h, 6.6+; not in bookworm's headers)
BPF_F_BEFORE, BPF_F_AFTER, BPF_F_ID = 1 << 3, 1 << 4, 1 << 5
BPF_TC_INGRESS, BPF_TC_EGRESS = 1, 2
TC_POINT = {"tc-ingress": BPF_TC_INGRESS, "tc-egress": BPF_TC_EGRESS}
TC_HANDLE = 1
XDP_FLAGS_UPDATE_IF_NOEXIST, XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE, XDP_FLAGS_REPLACE = 1, 2, 4, 16
XDP_MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
XDP_ATTACHED = {0: None, 1: "native", 2: "generic", 3: "offload", 4: "multi"}
LINK_PIN = "link"


# ---- the libbpf structures (libbpf 1.1 layouts; `sz` lets newer libbpfs read them) ----------

class _TcHook(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("ifindex", ctypes.c_int), ("attach_point", ctypes.c_int),
                ("parent", ctypes.c_uint32)]


class _TcOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("prog_fd", ctypes.c_int), ("flags", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("handle", ctypes.c_uint32), ("priority", ctypes.c_uint32)]


class _XdpAttachOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("old_prog_fd", ctypes.c_int)]


class _XdpQueryOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("prog_id", ctypes.c_uint32), ("drv_prog_id", ctypes.c_uint32),
                ("hw_prog_id", ctypes.c_uint32), ("skb_prog_id", ctypes.c_uint32), ("attach_mode", ctypes.c_uint8)]


class _LinkCreateOpts(ctypes.Structure):
    # libbpf 1.1: target_btf_id is copied into the kernel's link_create union at the offset that
    # tcx.relative_fd/relative_id shares (the kernel's union bpf_attr); libbpf 1.3 names it tcx.relative_*
    _fields_ = [("sz", ctypes.c_size_t), ("flags", ctypes.c_uint32), ("iter_info", ctypes.c_void_p),
                ("iter_info_len", ctypes.c_uint32), ("target_btf_id", ctypes.c_uint32),
                ("_union", ctypes.c_uint64 * 5)]


class _ProgQueryOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("prog_ids", ctypes.POINTER(ctypes.c_uint32)), ("prog_cnt", ctypes.c_uint32),
                ("prog_attach_flags", ctypes.c_void_p)]


class _LinkInfo(ctypes.Structure):
    # struct bpf_link_info: type, id, prog_id, then a union aligned to 8 (tcx/xdp: ifindex first)
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("prog_id", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32), ("ifindex", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("_rest", ctypes.c_uint64 * 8)]


_bound: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _bound
    if _bound is None:
        lb = libbpf.lib()
        vp, ci, cu = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
        for name, res, args in (
            ("bpf_tc_hook_create", ci, [vp]), ("bpf_tc_attach", ci, [vp, vp]), ("bpf_tc_query", ci, [vp, vp]),
            ("bpf_tc_detach", ci, [vp, vp]), ("bpf_xdp_attach", ci, [ci, ci, cu, vp]),
            ("bpf_xdp_query", ci, [ci, ci, vp]), ("bpf_link_create", ci, [ci, ci, ci, vp]),
            ("bpf_link_update", ci, [ci, ci, vp]), ("bpf_link_detach", ci, [ci]), ("bpf_obj_pin", ci, [ci, ctypes.c_char_p]),
            ("bpf_prog_query_opts", ci, [ci, ci, vp]),
            ("bpf_prog_load", ci, [ci, ctypes.c_char_p, ctypes.c_char_p, vp, ctypes.c_size_t, vp]),
        ):
            fn = getattr(lb, name)
            fn.restype, fn.argtypes = res, args
        _bound = lb
    return _bound


def _err(rc: int) -> int:
    return -rc if rc < 0 else ctypes.get_errno()


# ---- which kind: links where the kernel has them ----------------------------------------

_has_links: dict[str, bool] = {}


def kernel_has_links(hook: str) -> bool:
    """Does this kernel make tcx links (6.6+) / XDP links (5.9+)? Asked once per process, with
    nothing attached: a tcx link on ifindex 0 is ENODEV where tcx exists and EINVAL where the
    kernel does not know the attach type for a tc program. An XDP link on ifindex 0 is EINVAL
    both ways, so XDP links are told by the kernel's version."""
    family = "xdp" if hook == "xdp" else "tcx"
    if family not in _has_links:
        if family == "tcx":
            prog_fd = _probe_program()
            try:
                fd = _link_create(prog_fd, 0, BPF_TCX_INGRESS, 0)
            finally:
                os.close(prog_fd)
            if fd >= 0:
                os.close(fd)
            _has_links[family] = fd >= 0 or _err(fd) == errno.ENODEV
        else:
            release = re.match(r"(\d+)\.(\d+)", os.uname().release)
            _has_links[family] = bool(release) and (int(release[1]), int(release[2])) >= (5, 9)
    return _has_links[family]


def _probe_program() -> int:
    """A tc program that says "next" (r0 = -1; exit), for the probe: loads in well under a ms."""
    insns = struct.pack("<BBhi", 0xB7, 0, 0, -1) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    buf = ctypes.create_string_buffer(insns, len(insns))
    fd = _lib().bpf_prog_load(libbpf.BPF_PROG_TYPE_SCHED_CLS, b"fi_probe", b"GPL", buf, 2, None)
    if fd < 0:
        raise FaultinjError(f"loading a probe tc program: {os.strerror(_err(fd))}")
    return fd


def check_choice(choice: str, hook: str, tc_mode: str, placed: bool) -> None:
    """Refuse (usage) what no kernel could do: before anything is loaded or changed."""
    if choice not in ATTACH_CHOICES:
        raise SpecError(f"unknown --attach '{choice}': give one of {', '.join(ATTACH_CHOICES)}")
    if hook != "xdp" and tc_mode == "matchall":
        if choice == "link" or placed:
            raise SpecError("--tc-mode matchall is a tc filter with a BPF action: it has no link; "
                            "leave out --attach link and --first/--before/--after")
        return
    if choice == "netlink" and placed:
        raise SpecError("--first/--before/--after place a tcx link: leave out --attach netlink")
    if placed and hook == "xdp":
        raise SpecError("--first/--before/--after place tc programs (tcx links): XDP has one program per link")


def choose_kind(choice: str, hook: str, tc_mode: str, placed: bool) -> str:
    """The attach kind for a new fault: choice is auto (links where the kernel has them), link or
    netlink. placed: the user asked for a position among tcx programs."""
    check_choice(choice, hook, tc_mode, placed)
    if hook != "xdp" and tc_mode == "matchall":
        return "tc-matchall"
    if choice == "netlink":
        return "xdp" if hook == "xdp" else "tc-filter"
    has = kernel_has_links(hook)
    if not has and (choice == "link" or placed):
        what = "XDP links (kernel 5.9+)" if hook == "xdp" else "tcx links (kernel 6.6+)"
        raise KernelFeatureMissing(f"this kernel has no {what}: leave out --attach link"
                                   f"{' and --first/--before/--after' if placed else ''} "
                                   f"(faultinj then uses {'XDP through netlink' if hook == 'xdp' else 'a tc filter'})")
    if hook == "xdp":
        return "xdp-link" if has else "xdp"
    return "tcx-link" if has else "tc-filter"


# ---- links: tcx and XDP --------------------------------------------------------------------

def _link_create(prog_fd: int, ifindex: int, attach_type: int, flags: int, relative_id: int = 0) -> int:
    opts = _LinkCreateOpts(sz=ctypes.sizeof(_LinkCreateOpts), flags=flags, target_btf_id=relative_id)
    return _lib().bpf_link_create(prog_fd, ifindex, attach_type, ctypes.byref(opts))


def tcx_placement(first: bool, before: int | None, after: int | None) -> tuple[int, int]:
    """(flags, relative program id) for a tcx link: last by default, first, or next to a program."""
    if sum(bool(x) for x in (first, before, after)) > 1:
        raise SpecError("give one of --first, --before, --after")
    if before:
        return BPF_F_BEFORE | BPF_F_ID, before
    if after:
        return BPF_F_AFTER | BPF_F_ID, after
    if first:
        return BPF_F_BEFORE, 0   # before every program: the first to run
    return 0, 0                  # appended: runs after the tcx programs already there


def link_attach(kind: str, hook: str, ifindex: int, prog_fd: int, pin_dir: str,
                placement: tuple[int, int] = (0, 0)) -> str:
    """Attach through a link and pin it as <pin_dir>/link (the pin holds it, not this process).
    Returns the XDP mode (native/generic) or '' for tcx."""
    if kind == "tcx-link":
        flags, relative = placement
        fd = _link_create(prog_fd, ifindex, TCX_ATTACH[hook], flags, relative)
        if fd < 0:
            err = _err(fd)
            if relative and err == errno.ENOENT:
                raise StateError(f"no tc program with id {relative} on the {hook} tcx hook of this link "
                                 "(see 'bpftool net show')")
            raise FaultinjError(f"attaching the tcx link failed: {os.strerror(err)}")
        mode = ""
    else:
        fd, mode, err = -1, "", 0
        for mode in ("native", "generic"):
            fd = _link_create(prog_fd, ifindex, BPF_XDP, XDP_MODE_FLAGS[mode])
            if fd >= 0:
                break
            err = _err(fd)
            if err in (errno.EBUSY, errno.EEXIST):
                raise StateError("the link already has an XDP program: clear it first or pass --replace")
        if fd < 0:
            raise KernelFeatureMissing(f"cannot attach an XDP link (native and generic refused: "
                                       f"{os.strerror(err)})")
    try:
        pin(fd, pin_dir)
    finally:
        os.close(fd)   # the pin keeps the link
    return mode


def pin(link_fd: int, pin_dir: str) -> None:
    rc = _lib().bpf_obj_pin(link_fd, f"{pin_dir}/{LINK_PIN}".encode())
    if rc < 0:
        raise FaultinjError(f"pinning the link in {pin_dir}: {os.strerror(_err(rc))}")


def link_info(pin_dir: str) -> _LinkInfo | None:
    """The pinned link's kernel view (program id, ifindex: 0 once the device went or someone
    detached it), None when there is no pin."""
    try:
        fd = libbpf.obj_get(f"{pin_dir}/{LINK_PIN}")
    except FaultinjError:
        return None
    try:
        info = _LinkInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        rc = libbpf.lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
        if rc < 0:
            raise FaultinjError(f"reading the link in {pin_dir}: {os.strerror(_err(rc))}")
        return info
    finally:
        os.close(fd)


def unpin_link(pin_dir: str) -> None:
    """Detach the link pinned in pin_dir there and then (an unpinned link is freed later, from a
    work queue) and remove its pin. Nothing pinned: nothing to do."""
    path = f"{pin_dir}/{LINK_PIN}"
    try:
        fd = libbpf.obj_get(path)
    except FaultinjError:
        return
    try:
        _lib().bpf_link_detach(fd)
    finally:
        os.close(fd)
    os.unlink(path)


def link_replace_program(pin_dir: str, prog_fd: int) -> None:
    """Swap the program of our pinned XDP link in place (--replace on our own fault): atomic,
    no moment without a program."""
    fd = libbpf.obj_get(f"{pin_dir}/{LINK_PIN}")
    try:
        rc = _lib().bpf_link_update(fd, prog_fd, None)
        if rc < 0:
            raise FaultinjError(f"replacing the program of the XDP link: {os.strerror(_err(rc))}")
    finally:
        os.close(fd)


def tcx_programs(ifindex: int, hook: str) -> list[int]:
    """Program ids on a tcx hook in the order they run (links and tcx attachments). Namespace!"""
    ids = (ctypes.c_uint32 * 64)()
    opts = _ProgQueryOpts(sz=ctypes.sizeof(_ProgQueryOpts), prog_ids=ids, prog_cnt=64)
    rc = _lib().bpf_prog_query_opts(ifindex, TCX_ATTACH[hook], ctypes.byref(opts))
    if rc < 0:
        if _err(rc) in (errno.EINVAL, errno.ENOENT, errno.EOPNOTSUPP):
            return []    # no tcx on this kernel, or nothing attached
        raise FaultinjError(f"listing the tcx programs: {os.strerror(_err(rc))}")
    return list(ids[: opts.prog_cnt])


# ---- tc filters (clsact + cls_bpf) through libbpf ---------------------------------------

def _hook(ifindex: int, hook: str | int) -> _TcHook:
    point = hook if isinstance(hook, int) else TC_POINT[hook]
    return _TcHook(sz=ctypes.sizeof(_TcHook), ifindex=ifindex, attach_point=point)


def _opts(**kw) -> _TcOpts:
    return _TcOpts(sz=ctypes.sizeof(_TcOpts), **kw)


def clsact_create(ifindex: int) -> bool:
    """Add clsact; True when we added it, False when it was there."""
    rc = _lib().bpf_tc_hook_create(ctypes.byref(_hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)))
    if rc == -errno.EEXIST:
        return False
    if rc < 0:
        raise KernelFeatureMissing(f"cannot add the clsact qdisc ({os.strerror(_err(rc))}): "
                                   "the kernel needs CONFIG_NET_SCH_INGRESS")
    return True


def tc_filter_attach(ifindex: int, hook: str, prog_fd: int, prio: int) -> int:
    """Our cls_bpf filter at (handle 1, prio); the kernel refuses one already there. Returns its
    program id as the kernel reports it."""
    opts = _opts(prog_fd=prog_fd, handle=TC_HANDLE, priority=prio)
    rc = _lib().bpf_tc_attach(ctypes.byref(_hook(ifindex, hook)), ctypes.byref(opts))
    if rc < 0:
        err = _err(rc)
        if err in (errno.ENOENT, errno.EOPNOTSUPP):
            raise KernelFeatureMissing(f"the kernel lacks cls_bpf (CONFIG_NET_CLS_BPF) ({os.strerror(err)})")
        raise FaultinjError(f"adding the tc filter failed: {os.strerror(err)}")
    return opts.prog_id


def prog_id_of_filter_name(name: str) -> int | None:
    """bpf_tc_attach names a filter '<program name>:[<program id>]' (pyroute2's dumps lack the id)."""
    m = re.fullmatch(r".*:\[(\d+)\]", name or "")
    return int(m.group(1)) if m else None


def tc_filter_prog(ifindex: int, hook: str, prio: int) -> int:
    """The program id of the cls_bpf filter at (handle 1, prio), 0 when there is none."""
    opts = _opts(handle=TC_HANDLE, priority=prio)
    rc = _lib().bpf_tc_query(ctypes.byref(_hook(ifindex, hook)), ctypes.byref(opts))
    return opts.prog_id if rc == 0 else 0


def tc_filter_detach(ifindex: int, hook: str, prio: int, prog_id: int) -> bool:
    """Delete the filter at (handle 1, prio) only if it runs our program; False when it is not ours."""
    if not prog_id or tc_filter_prog(ifindex, hook, prio) != prog_id:
        return False
    rc = _lib().bpf_tc_detach(ctypes.byref(_hook(ifindex, hook)), ctypes.byref(_opts(handle=TC_HANDLE, priority=prio)))
    if rc < 0 and rc != -errno.ENOENT:
        raise FaultinjError(f"deleting the tc filter failed: {os.strerror(_err(rc))}")
    return rc == 0


# ---- XDP through netlink (libbpf) --------------------------------------------------------

def xdp_current(ifindex: int) -> tuple[str | None, int]:
    """(mode, program id) of the XDP program on the link, (None, 0) if none. Namespace!"""
    opts = _XdpQueryOpts(sz=ctypes.sizeof(_XdpQueryOpts))
    rc = _lib().bpf_xdp_query(ifindex, 0, ctypes.byref(opts))
    if rc < 0:
        raise FaultinjError(f"querying XDP on ifindex {ifindex}: {os.strerror(_err(rc))}")
    return XDP_ATTACHED.get(opts.attach_mode, "unknown"), opts.prog_id


def xdp_attach(ifindex: int, prog_fd: int, replace_fd: int | None, modes=("native", "generic")) -> str:
    """Attach natively, else generic. replace_fd: the program to replace (XDP_FLAGS_REPLACE: the
    kernel refuses when another is there), -1 to replace whatever is there; None: refuse any."""
    last = 0
    for mode in modes:
        flags = XDP_MODE_FLAGS[mode]
        opts = _XdpAttachOpts(sz=ctypes.sizeof(_XdpAttachOpts))
        if replace_fd is None:
            flags |= XDP_FLAGS_UPDATE_IF_NOEXIST
        elif replace_fd >= 0:
            flags |= XDP_FLAGS_REPLACE
            opts.old_prog_fd = replace_fd
        rc = _lib().bpf_xdp_attach(ifindex, prog_fd, flags, ctypes.byref(opts))
        if rc == 0:
            return mode
        last = _err(rc)
        if last in (errno.EBUSY, errno.EEXIST):
            raise StateError(f"the link already has an XDP program ({os.strerror(last)}): "
                             "clear it first or pass --replace")
    raise KernelFeatureMissing(f"cannot attach XDP on this link (native and generic refused: "
                               f"{os.strerror(last)}); the kernel needs CONFIG_BPF and XDP support")


def xdp_detach(ifindex: int, mode: str, expected_fd: int) -> bool:
    """Detach our program; False when the link holds another one (the kernel checks, left alone)."""
    opts = _XdpAttachOpts(sz=ctypes.sizeof(_XdpAttachOpts), old_prog_fd=expected_fd)
    rc = _lib().bpf_xdp_attach(ifindex, -1, XDP_MODE_FLAGS.get(mode, 0) | XDP_FLAGS_REPLACE, ctypes.byref(opts))
    if rc in (-errno.EEXIST, -errno.EBUSY):
        return False
    if rc < 0:
        raise FaultinjError(f"detaching XDP: {os.strerror(_err(rc))}")
    return True


# ---- one record: is it attached, detach it -------------------------------------------------

def attached(rec) -> tuple[bool, str]:
    """(still attached, why not) for a record of a libbpf kind, asked of the kernel. Namespace!"""
    kind = rec.attach_kind
    if kind in ("tcx-link", "xdp-link"):
        info = link_info(rec.pin_dir)
        if info is None:
            return False, "its link pin is gone"
        if info.ifindex != rec.ifindex or info.prog_id != rec.prog_id:
            return False, "its link was detached by something else"
        return True, ""
    if kind == "xdp":
        _, prog_id = xdp_current(rec.ifindex)
        if prog_id != rec.prog_id:
            return False, "another XDP program replaced it" if prog_id else "its XDP program was removed"
        return True, ""
    if tc_filter_prog(rec.ifindex, rec.hook, rec.tc_prio) != rec.prog_id:
        return False, "its tc filter was removed by something else"
    return True, ""


def detach(rec) -> None:
    """Undo exactly this record's attachment. A link is ours by its pin in our directory: detached
    there and then (the kernel frees an unpinned link later, from a work queue) and unpinned."""
    kind = rec.attach_kind
    if kind in ("tcx-link", "xdp-link"):
        return unpin_link(rec.pin_dir)
    with netns.entered(rec.netns):
        if kind == "xdp":
            fd = libbpf.prog_fd_by_id(rec.prog_id) if rec.prog_id else None
            if fd is None:
                return
            try:
                mode, current = xdp_current(rec.ifindex)
                if current == rec.prog_id:
                    xdp_detach(rec.ifindex, rec.attach_mode or mode or "", fd)
            finally:
                os.close(fd)
        elif rec.tc_prio is not None:
            tc_filter_detach(rec.ifindex, rec.hook, rec.tc_prio, rec.prog_id)
