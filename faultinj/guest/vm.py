"""QEMU guests booted with virtme-ng over this machine's root filesystem
(read-only), each running the faultinj agent on a virtio-serial port.

A guest's NICs are tap devices made here with the lab's prefix; the caller
joins them to its bridges. `stop()` ends QEMU and removes the taps, and the
lab record names both (pid and taps), so a killed run is reaped.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EnvironmentProblem
from ..inject.labrecords import kill_group, remove_workdirs, workdir  # noqa: F401 (guests' API)
from .agent import PORT_NAME, Agent
from .kernels import Kernel
from ..kernel.build import cache_dir
from .kernels import resolve

BOOT_TIMEOUT = float(os.environ.get("FAULTINJ_VM_BOOT_TIMEOUT", "240"))


@dataclass
class Nic:
    tap: str
    mac: str


@dataclass
class VMSpec:
    name: str
    kernel: Kernel
    memory: str = "1G"
    cpus: int = 1
    nics: list[Nic] = field(default_factory=list)


def accel() -> tuple[str, str]:
    """('kvm' | 'tcg', why). KVM only where the CPU exposes vmx/svm: with /dev/kvm alone a
    guest hangs after the BIOS here (DESIGN.md). FAULTINJ_VM_ACCEL=kvm|tcg overrides."""
    forced = os.environ.get("FAULTINJ_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, "FAULTINJ_VM_ACCEL"
    if not os.path.exists("/dev/kvm"):
        return "tcg", "software emulation (TCG): no /dev/kvm"
    with open("/proc/cpuinfo") as f:
        flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    if "vmx" not in flags and "svm" not in flags:
        return "tcg", "software emulation (TCG): /dev/kvm exists but the CPU exposes no vmx/svm"
    return "kvm", "KVM"


def require_tools() -> str:
    vng = shutil.which("vng") or str(Path(sys.executable).parent / "vng")
    if not os.access(vng, os.X_OK):
        raise EnvironmentProblem("VM hosts need virtme-ng: pip install virtme-ng (or 'pip install faultinj[vm]')")
    if not shutil.which("qemu-system-x86_64"):
        raise EnvironmentProblem("VM hosts need QEMU: apt-get install qemu-system-x86")
    if not shutil.which("busybox"):
        raise EnvironmentProblem("VM hosts need busybox for virtme-ng's initramfs: apt-get install busybox-static")
    return vng


def make_tap(name: str) -> None:
    subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], check=True, capture_output=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True, capture_output=True)


def remove_tap(name: str, netns: str | None = None) -> None:
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["link", "del", name]
    subprocess.run(cmd, capture_output=True)


class Guest:
    """One booted VM with its agent."""

    def __init__(self, spec: VMSpec, workdir: Path):
        self.spec = spec
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.agent: Agent | None = None
        self.accel = ""

    @property
    def socket_path(self) -> Path:
        return self.workdir / "agent.sock"

    def command(self, vng: str, accel_: str) -> list[str]:
        k = self.spec.kernel
        qemu = [f"-chardev socket,id=fiag,path={self.socket_path},server=on,wait=off",
                "-device virtio-serial-pci", f"-device virtserialport,chardev=fiag,name={PORT_NAME}"]
        for i, nic in enumerate(self.spec.nics):
            qemu += [f"-netdev tap,id=fin{i},ifname={nic.tap},script=no,downscript=no",
                     f"-device virtio-net-pci,netdev=fin{i},mac={nic.mac}"]

        cache = cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        script = self.workdir / "agent.sh"
        # the guest shares this machine's compiled objects (same clang, same sources: cache hits)
        script.write_text(
            f"export FAULTINJ_CACHE_DIR={shlex.quote(str(cache))} FAULTINJ_RUN_DIR=/run/faultinj\n"
            f"cd {shlex.quote(str(self.workdir))}\n"
            # virtme-ng loads no NIC driver unless it made the network itself
            "modprobe -q virtio_net 2>/dev/null || true\n"
            f"exec {shlex.quote(sys.executable)} -m faultinj.guest.server --virtio-port "
            f"> {shlex.quote(str(self.workdir / 'agent.log'))} 2>&1\n")
        cmd = [vng, "-r", str(k.vmlinuz), "--name", self.spec.name, "--memory", self.spec.memory,
               "--cpus", str(self.spec.cpus), "--rwdir", str(self.workdir), "--rwdir", str(cache),
               f"--qemu-opts={' '.join(qemu)}"]
        if k.modules:
            cmd += ["--rodir", f"/lib/modules={k.modules}"]
        if accel_ == "tcg":
            cmd.append("--disable-kvm")
        return cmd + ["--", f"sh {shlex.quote(str(script))}"]

    def start(self) -> "Guest":
        vng = require_tools()
        self.accel, _ = accel()
        self.workdir.mkdir(parents=True, exist_ok=True)
        console = open(self.workdir / "console.log", "wb")
        self.proc = subprocess.Popen(self.command(vng, self.accel), stdin=subprocess.DEVNULL, stdout=console,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PATH": f"{Path(vng).parent}:{os.environ.get('PATH', '')}"})
        console.close()
        return self

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> Agent:
        try:
            self.agent = Agent.unix(str(self.socket_path), f"VM {self.spec.name}", timeout,
                                    alive=lambda: self.proc is not None and self.proc.poll() is None)
        except EnvironmentProblem as exc:
            tail = self.console_tail()
            self.stop()
            raise EnvironmentProblem(f"{exc} ({self.accel}); the guest did not come up: {tail}") from None
        return self.agent

    def console_tail(self) -> str:
        for name in ("agent.log", "console.log"):
            try:
                lines = [ln for ln in (self.workdir / name).read_text(errors="replace").splitlines() if ln.strip()]
            except OSError:
                continue
            if lines:
                return f"{name}: {lines[-1][:200]}"
        return "no output"

    def stop(self) -> None:
        self.agent_said_bye = False
        if self.agent:
            try:
                self.agent.call("shutdown", _timeout=10)
                self.agent_said_bye = True
            except Exception:
                pass
            self.agent.close()
            self.agent = None
        if self.proc:
            try:
                self.proc.wait(20 if self.agent_said_bye else 0.1)
            except subprocess.TimeoutExpired:
                pass
            kill_group(self.proc.pid)   # whatever of the guest is left (QEMU is vng's grandchild)
            self.proc.wait()
            self.proc = None





def probe_kernel(name: str, progress=lambda m: None) -> dict:
    """Boot kernel `name` in a guest and run doctor's probes there: {release, accel, ok, probes}."""
    import secrets


    require_tools()
    kernel = resolve(name, progress)
    accel_, why = accel()
    progress(f"booting {kernel.release} in a guest ({why})")
    tag = f"doc{secrets.token_hex(3)}"
    guest = Guest(VMSpec(tag, kernel), workdir(tag, "doctor")).start()
    try:
        agent = guest.wait_ready()
        out = agent.call("doctor")
        return {"release": agent.info["release"], "accel": accel_, **out}
    finally:
        guest.stop()
        shutil.rmtree(guest.workdir, ignore_errors=True)
