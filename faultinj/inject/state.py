"""faultinj's own state: a record per applied fault, pins in bpffs, a lock.

Records live in RUN_DIR (tmpfs, gone at reboot like the programs they
describe); maps and the program are pinned under PIN_ROOT/<fault id>/.
Both directories are root's alone (0700, files 0600). Every mutating command
holds an exclusive lock, so two faultinj processes never interleave.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from ..errors import EnvironmentProblem, StateError

BPFFS = "/sys/fs/bpf"
# the fault name of a user's own program (faults.PROGRAM.name: tests/test_cli.py), known here so
# that status tells one without loading the fault catalogue
CUSTOM_PROGRAM = "program"


def run_dir() -> Path:
    return Path(os.environ.get("FAULTINJ_RUN_DIR", "/run/faultinj"))


def pin_root() -> Path:
    return Path(os.environ.get("FAULTINJ_PIN_ROOT", f"{BPFFS}/faultinj"))


def compose(fault: str, value: Any, match: list, hook: str) -> str:
    """A record's spec from its parts: NAME=VALUE[,KEY=V...]@HOOK, as parse_spec reads it."""
    return f"{fault}={value}{''.join(f',{k}={v}' for k, v in match)}@{hook}"


def _number_or_text(text: str) -> Any:
    """A value as the fault's parser gave it: a number where its text is one (drop's 0.25, ttl's -1),
    else the text (delay's 20ms, tcp-flags' +syn-ack)."""
    try:
        v = json.loads(text)
    except ValueError:
        return text
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else text


@dataclass
class Record:
    id: str
    # the fault in force, canonical: fault, value, match and hook are read from it (properties)
    spec: str
    netns: str | None         # None: ours; a name under /run/netns; or a namespace file's path
    ifname: str
    ifindex: int
    attach_mode: str          # xdp: native|generic; tc: cls_bpf|matchall
    prog_id: int
    pin_dir: str
    seed: int
    deadline_ns: int = 0      # CLOCK_MONOTONIC, as the program sees it; 0: none
    expires_at: float | None = None  # the same instant on the wall clock, for people
    tc_prio: int | None = None
    filter_name: str | None = None
    # how it is attached (kernel/links.py): tcx-link | tc-filter | tc-matchall | xdp-link | xdp
    attach_kind: str = ""
    created_at: float = field(default_factory=time.time)
    # The intent journal: set while a command changes this fault ("apply",
    # "set", "clear"), cleared when it is done. Mutating commands hold the
    # lock, so a record still pending when the lock is taken again belongs to
    # a process that died midway: the next command rolls it back (apply),
    # forward (set) or finishes it (clear).
    pending: str | None = None
    pid: int | None = None
    # Targets named by the user rather than by namespace (see inject/targets.py):
    target: str | None = None        # as the user named it: container:web, pid:123, peer-of:web
    container: str | None = None     # the container's full id (clear --container matches it)
    netns_inode: int | None = None   # identity of a namespace given by path (/proc/PID is reused)
    # a root qdisc the fault needs (time faults: fq): "adding" (intent), "added" by faultinj (cleared with
    # the last fault that added it), "present" (someone's fq: left alone)
    qdisc: str | None = None
    # the root qdisc `apply --replace` put fq in place of (attach.save_root_qdisc), put back at clear
    qdisc_saved: dict | None = None
    # The configuration's generation (the config map's gen; each `set` counts it up) and the spec
    # of each earlier one, so journal events recorded before a `set` show the spec then in force.
    gen: int = 0
    specs: dict = field(default_factory=dict)   # str(gen) -> spec, for gen < self.gen
    # what apply found that may keep the fault from acting (inject/advice.py); status says it afresh
    warnings: list = field(default_factory=list)
    # who applied it (current_user(): the sudo user, else the uid's name); "" in records from before
    user: str = ""
    # the name of what applied it, when one thing applied several faults (a Chaos Mesh manifest's
    # metadata.name): status shows it, clear --name removes them together
    name: str | None = None

    def _parts(self) -> tuple[str, Any, list, str]:
        """(fault, value, match, hook) read from the spec, without the fault catalogue (status and
        clear never load it). A custom program's value is a path: taken whole, commas and all."""
        head, _, hook = self.spec.rpartition("@")
        fault, _, rest = head.partition("=")
        if fault == CUSTOM_PROGRAM:
            return fault, rest, [], hook
        value, *words = rest.split(",")
        return fault, _number_or_text(value), [w.split("=", 1) for w in words], hook

    @property
    def fault(self) -> str:
        return self._parts()[0]

    @property
    def value(self) -> Any:
        return self._parts()[1]

    @property
    def match(self) -> list:
        """The filter words, [[key, value], ...]."""
        return self._parts()[2]

    @property
    def hook(self) -> str:
        return self._parts()[3]

    @property
    def filters(self) -> str:
        return "".join(f",{k}={v}" for k, v in self.match)

    def fault_spec(self):
        """The spec in force, parsed (faults.FaultSpec): what the config is built from."""
        from ..faults import parse_spec

        return parse_spec(self.spec)

    def spec_at(self, gen: int) -> str:
        """The spec in force at configuration generation gen."""
        return self.specs.get(str(gen), self.spec) if gen != self.gen else self.spec

    @property
    def custom(self) -> bool:
        """A user's own program (apply --program): no faultinj config, counters or journal."""
        return self.fault == CUSTOM_PROGRAM

    @property
    def where(self) -> str:
        if self.target:
            return f"{self.target}/{self.ifname}"
        return f"{self.netns}/{self.ifname}" if self.netns else self.ifname

    def expired(self, now_ns: int | None = None) -> bool:
        return bool(self.deadline_ns) and (now_ns or time.monotonic_ns()) >= self.deadline_ns

    def to_json(self) -> dict:
        d = asdict(self)
        # the parts too: what --json has always shown, and what an older faultinj reads
        d["fault"], d["value"], d["match"], d["hook"] = self._parts()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Record":
        d = dict(d)
        if "spec" not in d:   # the parts alone: the spec is made of them
            d["spec"] = compose(d["fault"], d["value"], d.get("match") or [], d["hook"])
        known = {f.name for f in fields(cls)}
        rec = cls(**{k: v for k, v in d.items() if k in known})   # a newer version's record: its extra keys left
        if not rec.attach_kind:   # a record written before attach kinds: what that version made
            rec.attach_kind = ("xdp" if rec.hook == "xdp" else
                               "tc-matchall" if rec.attach_mode == "matchall" else "tc-filter")
        return rec


def _is_bpffs(path: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path and line.split()[2] == "bpf" for line in f)


def ensure_bpffs() -> None:
    """Mount bpffs at /sys/fs/bpf if it is not there (it is not by default here)."""
    root = str(pin_root())
    if not root.startswith(BPFFS + "/"):
        return  # a test or user pointed pins elsewhere: their mount
    if _is_bpffs(BPFFS):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", BPFFS.encode(), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise EnvironmentProblem(
            f"bpffs is not mounted at {BPFFS} and mounting it failed ({os.strerror(err)}): "
            f"run 'mount -t bpf bpf {BPFFS}' as root"
        )


def ensure_dirs() -> None:
    ensure_bpffs()
    for d in (run_dir(), run_dir() / "faults", run_dir() / "links", pin_root()):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)


@contextmanager
def locked(exclusive: bool = True) -> Iterator[None]:
    ensure_dirs()
    fd = os.open(run_dir() / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)  # a reader sees the old record or the new, never half


def current_user() -> str:
    """Who runs faultinj: the user behind sudo (faultinj runs as root), else the uid's name."""
    import pwd

    if os.environ.get("SUDO_USER") and os.getuid() == 0:
        return os.environ["SUDO_USER"]
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def records() -> list[Record]:
    d = run_dir() / "faults"
    out = []
    if not d.is_dir():
        return out
    for p in sorted(d.glob("*.json")):
        try:
            out.append(Record.from_json(json.loads(p.read_text())))
        except (ValueError, TypeError) as exc:
            raise StateError(f"faultinj record {p} is unreadable ({exc}): remove it by hand") from None
    return sorted(out, key=lambda r: r.created_at)


def save(rec: Record) -> None:
    _write_json(run_dir() / "faults" / f"{rec.id}.json", rec.to_json())


def delete(rec: Record) -> None:
    try:
        os.unlink(run_dir() / "faults" / f"{rec.id}.json")
    except FileNotFoundError:
        pass


def pin_dir_for(fault_id: str) -> Path:
    return pin_root() / fault_id


def new_pin_dir(fault_id: str) -> Path:
    d = pin_root() / fault_id
    d.mkdir(mode=0o700)
    return d


def remove_pins(pin_dir: str | Path) -> None:
    """Unpin a fault's objects. Only directories below our pin root are touched."""
    p = Path(pin_dir)
    if p.parent != pin_root() or not p.is_dir():
        return
    shutil.rmtree(p)


# Which links have a clsact qdisc that faultinj added (so only those are removed)

def _link_path(netns: str | None, ifindex: int) -> Path:
    # a namespace given by path holds slashes: '%' stands for them
    return run_dir() / "links" / f"{(netns or '-').replace('%', '%25').replace('/', '%')}@{ifindex}.json"


def mark_clsact_created(netns: str | None, ifindex: int, ifname: str) -> None:
    _write_json(_link_path(netns, ifindex), {"clsact_created": True, "ifname": ifname})


def clsact_created(netns: str | None, ifindex: int) -> bool:
    return _link_path(netns, ifindex).is_file()


def forget_link(netns: str | None, ifindex: int) -> None:
    try:
        os.unlink(_link_path(netns, ifindex))
    except FileNotFoundError:
        pass
