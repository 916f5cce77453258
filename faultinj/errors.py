"""Errors a user can cause or meet, each with the exit code the CLI gives it.

Library code raises these and never exits; `faultinj.cli` is the one
boundary that turns them into a one-line message and an exit status.
"""

from __future__ import annotations

import enum
import errno
import os


_before_first_note: list = []   # run once, before the first note is logged (the CLI's handler)


def note(message: str, *args) -> None:
    """Tell the user what the library did on its own (finished what a killed command left, removed
    an expired fault): a warning on the 'faultinj' logger. logging is imported by the first note,
    not at every start (~2 ms of `status` and `clear`, which mostly have none)."""
    import logging

    while _before_first_note:
        _before_first_note.pop(0)()
    logging.getLogger("faultinj").warning(message, *args)


def before_first_note(install) -> None:
    """install() runs when the first note comes (it may import logging and add a handler)."""
    if install not in _before_first_note:
        _before_first_note.append(install)


class ExitStatus(enum.IntEnum):
    OK = 0
    FAILED = 1          # a verification failed, or an unexpected error
    USAGE = 2           # bad input: unknown fault, bad value, bad flag, no such interface
    ENVIRONMENT = 3     # not root, clang or libbpf missing
    KERNEL = 4          # the kernel lacks a feature, or the verifier refused a program
    STATE = 5           # faultinj's own state is in the way (busy hook, no such fault)


class FaultinjError(Exception):
    """Base class: `str(err)` is the one line shown to the user."""

    status = ExitStatus.FAILED


class SpecError(FaultinjError):
    status = ExitStatus.USAGE


class TargetError(FaultinjError):
    """Unknown namespace or interface."""

    status = ExitStatus.USAGE


class EnvironmentProblem(FaultinjError):
    status = ExitStatus.ENVIRONMENT


class ProgramError(FaultinjError):
    """A user's own BPF C file (apply --program) is missing or does not compile: bad input, not a
    broken installation (BuildError)."""

    status = ExitStatus.USAGE


class KernelFeatureMissing(FaultinjError):
    status = ExitStatus.KERNEL


class BuildError(FaultinjError):
    status = ExitStatus.ENVIRONMENT


class VerifierError(FaultinjError):
    status = ExitStatus.KERNEL

    def __init__(self, program: str, log_tail: str, errno_: int):
        self.program = program
        self.log_tail = log_tail
        self.errno = errno_
        tail = " | ".join(line for line in log_tail.strip().splitlines()[-6:] if line.strip())
        super().__init__(f"the kernel verifier rejected program '{program}' (errno {errno_}): {tail}")


class StateError(FaultinjError):
    status = ExitStatus.STATE


_NETLINK_STATUS = {
    errno.EPERM: ExitStatus.ENVIRONMENT, errno.EACCES: ExitStatus.ENVIRONMENT,
    errno.ENODEV: ExitStatus.USAGE, errno.ENOENT: ExitStatus.USAGE, errno.EINVAL: ExitStatus.USAGE,
    errno.ERANGE: ExitStatus.USAGE, errno.E2BIG: ExitStatus.USAGE,
    errno.EOPNOTSUPP: ExitStatus.KERNEL, errno.ENOTSUP: ExitStatus.KERNEL,
    errno.EEXIST: ExitStatus.STATE, errno.EBUSY: ExitStatus.STATE,
}


def from_foreign(exc: BaseException) -> FaultinjError | None:
    """An exception from below the library (netlink, a subprocess, the file system) that a user can
    cause, as a FaultinjError with its exit status; None for anything else (a bug: a traceback)."""
    import subprocess

    try:
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError:  # pragma: no cover
        NetlinkError = ()
    if isinstance(exc, NetlinkError):
        code = exc.code if isinstance(exc.code, int) else 0
        err = FaultinjError(f"the kernel refused a netlink request: {errno.errorcode.get(code, code)} "
                            f"({os.strerror(code) if code else exc}); check the interface, namespace and privileges")
        err.status = _NETLINK_STATUS.get(code, ExitStatus.FAILED)
        return err
    if isinstance(exc, subprocess.TimeoutExpired):
        cmd = exc.cmd if isinstance(exc.cmd, str) else " ".join(map(str, exc.cmd))
        return FaultinjError(f"'{cmd[:120]}' did not finish within {exc.timeout:.3g}s: is the machine or the lab "
                             "overloaded? try again or with a longer duration")
    if isinstance(exc, FileNotFoundError):
        return SpecError(missing_path(exc.filename))
    if isinstance(exc, PermissionError):
        return EnvironmentProblem(f"permission denied: {exc.filename or exc}: check its permissions (faultinj runs "
                                  "as root)")
    return None


def missing_path(path) -> str:
    """What is missing: the file, or the directory it was to be in (an output path: --out, --pcap)."""
    parent = os.path.dirname(os.path.abspath(str(path))) if path is not None else ""
    if parent and not os.path.isdir(parent):
        return f"no such directory: {os.path.dirname(str(path)) or parent} (for {path}): create it first"
    return f"no such file: {path}: check the path"
