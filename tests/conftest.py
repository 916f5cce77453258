"""Fixtures: private faultinj state per test session, throw-away labs.

Tests that touch the kernel run as root against the real kernel (CI runs as
root); nothing here attaches to the machine's own interfaces: every lab is
made of namespaces with a unique prefix and removed at teardown, even when
the test fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session", autouse=True)
def private_state(tmp_path_factory):
    """Point faultinj's records, pins and cache at places of this session's own."""
    tag = secrets.token_hex(3)
    run = tmp_path_factory.mktemp("run")
    pins = f"/sys/fs/bpf/faultinj-test-{tag}"
    saved = {k: os.environ.get(k) for k in ("FAULTINJ_RUN_DIR", "FAULTINJ_PIN_ROOT")}
    os.environ["FAULTINJ_RUN_DIR"] = str(run)
    os.environ["FAULTINJ_PIN_ROOT"] = pins
    yield {"run_dir": run, "pin_root": Path(pins)}
    leftovers = sorted(os.listdir(pins)) if os.path.isdir(pins) else []
    shutil.rmtree(pins, ignore_errors=True)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    assert not leftovers, f"faultinj pins left behind by the tests: {leftovers}"


@pytest.fixture(scope="session")
def kernel_features(private_state) -> dict[str, bool]:
    """What doctor's probes find on the kernel the tests run on (this machine's, or a guest's):
    tests take the success path where a feature exists and the clear refusal where it does not."""
    from faultinj.inject import doctor

    return {p.name: p.ok for p in doctor.run()}


@pytest.fixture
def lab():
    from faultinj.inject.lab import Lab, LinkSettings

    lab = Lab()
    try:
        lab.up(a_settings=LinkSettings(tx_checksum=False, gso_max_segs=1))
        yield lab
    finally:
        _clear_quietly(lab)
        lab.down()


def _clear_quietly(lab) -> None:
    import faultinj

    for host in (lab.a, lab.b):
        if host is None:
            continue
        try:
            faultinj.clear(netns_name=host.netns, all_faults=True)
        except Exception:
            pass


@pytest.fixture(scope="session")
def foreign_obj(tmp_path_factory) -> Path:
    """Another tool's BPF object (tc and xdp sections that pass everything)."""
    out = tmp_path_factory.mktemp("foreign") / "foreign.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-c", str(DATA / "foreign.bpf.c"), "-o", str(out)],
                   check=True)
    return out


def ns_run(netns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, *cmd], capture_output=True, text=True, check=check)


def cli_runner():
    """typer's CliRunner with stderr apart (click < 8.2 mixes it in by default)."""
    from typer.testing import CliRunner

    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2: always apart
        return CliRunner()


def pytest_terminal_summary(terminalreporter):
    """The checksum-state matrix's table (tests/test_csum_matrix.py), when its cells ran."""
    import sys

    mod = sys.modules.get("test_csum_matrix")
    rows = getattr(mod, "MATRIX_ROWS", None)
    if rows:
        terminalreporter.write_sep("=", "checksum-state matrix")
        terminalreporter.write_line(mod.format_table(rows))
