"""Errors a user can cause or meet, each with the exit code the CLI gives it.

Library code raises these and never exits; `faultinj.cli` is the one
boundary that turns them into a one-line message and an exit status.
"""

from __future__ import annotations

import enum


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
