"""The `faultinj` command: parses, calls faultinj.api (which loads only the part a command calls) or,
for scenarios, faultinj.scenario, and prints.

One error boundary (`_boundary`) turns a FaultinjError into one line on
stderr and its exit status; `--traceback` shows the Python traceback instead.

No `from __future__ import annotations` here: typer reads every command's annotations at each start,
and as strings each is compiled and evaluated again (~10 ms of every command).
"""

import functools
import json
import os
import sys
import time
from typing import List, Optional

import typer
import typer.core

from . import api, errors
from ._version import __version__
from .errors import ExitStatus, FaultinjError, from_foreign

class _Group(typer.core.TyperGroup):
    """Usage errors as one line too (typer would draw a panel), exit code 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:  # typer >= 0.16 carries its own copy of click
            from typer import _click as click
        except ImportError:  # pragma: no cover
            import click

        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except getattr(click.exceptions, "NoArgsIsHelpError", ()) as exc:
            typer.echo(exc.format_message())  # bare command: its help
            sys.exit(0)
        except click.exceptions.UsageError as exc:
            cmd = exc.ctx.command_path if exc.ctx else "faultinj"
            line = f"{exc.format_message()} (see '{cmd} --help')"
            argv = kwargs.get("args") or (args[0] if args and args[0] else None) or sys.argv[1:]
            if "--json" in argv:
                typer.echo(json.dumps({"error": line, "exit_code": int(ExitStatus.USAGE), "kind": "UsageError"}))
            else:
                typer.echo(f"faultinj: error: {line}", err=True)
            sys.exit(int(ExitStatus.USAGE))
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("faultinj: interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_Group,
    help="Reproduce network bugs with eBPF fault injection: apply, observe, change and clear faults.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_opts = {"traceback": False}

NetnsOpt = typer.Option(None, "--netns", "-n", help="Network namespace (a name from 'ip netns list').")
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of text.")
ContainerOpt = typer.Option(None, "--container", "-c", help="A container (Docker or Podman by name or id, containerd by id): "
                            "work in its network namespace.")
PidOpt = typer.Option(None, "--pid", help="Work in this process's network namespace.")
NetnsPathOpt = typer.Option(None, "--netns-path", help="Work in the network namespace of this file "
                            "(e.g. /proc/PID/ns/net, /run/docker/netns/ID).")
# one fault by id: --id everywhere, --fault its alias (verify said --fault, the others --id)
HOOKS_SHOWN = "[xdp|ingress|egress]"          # and tc-ingress, tc-egress: the same hooks, long names
TC_MODES_SHOWN = "[cls_bpf|matchall]"
# every filter key of faults/match.py (KEYS), as apply --help shows it (a test checks none is left out)
FILTERS_SHOWN = ("src=, dst= (an address or CIDR); proto= (tcp, udp, icmp, icmpv6 or a number); sport=, "
                 "dport= (a port or a range 1024-2047); flags= (TCP flags present/absent, e.g. +syn-ack); vlan= "
                 "(the outer tag's id); mark=VALUE[/MASK] (the skb mark; tc hooks); p=P or ratio=N (how often, "
                 "for a fault whose value is not a rate: ttl=, dscp=, truncate=, delay=, ...); nth=K (only the Kth packet "
                 "of each flow); journal=off (record no journal events; default on)")


def _id_opt(help: str):
    return typer.Option(None, "--id", "--fault", metavar="ID", help=help)


RuntimeOpt = typer.Option(None, "--runtime", metavar="[docker|podman|containerd]",
                          help="With --container/--peer-of: the runtime to ask (default: the installed ones "
                          "in that order, the first that knows the container).")


def _version(value: bool) -> None:
    if value:
        # the package's own (pyproject's version: tests/test_cli.py); importlib.metadata would cost
        # a third of the interpreter's start
        typer.echo(f"faultinj {__version__}")
        raise typer.Exit()


def _show_notes() -> None:
    """The library's notes (what a command finished for a killed one) as 'faultinj: note:' lines.
    Installed by the first note: logging is not loaded at every start (~2 ms)."""
    errors.before_first_note(_install_notes_handler)


def _install_notes_handler() -> None:
    import logging

    class _Notes(logging.Handler):
        def emit(self, record):
            typer.echo(f"faultinj: note: {record.getMessage()}", err=True)

    logger = logging.getLogger("faultinj")
    if not any(type(h).__name__ == "_Notes" for h in logger.handlers):
        logger.addHandler(_Notes(logging.WARNING))


@app.callback()
def _main(traceback: bool = typer.Option(False, "--traceback", help="Show Python tracebacks on errors."),
          version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="Show faultinj's version and exit.")):
    _opts["traceback"] = traceback
    _show_notes()


def _fail(exc: FaultinjError, as_json: bool):
    """The one way a command fails: one line on stderr (or a JSON object on stdout with --json)."""
    line = f"{exc}".splitlines()[0] if str(exc) else type(exc).__name__
    every = getattr(exc, "all_lines", None)   # several mistakes (a scenario file): one line each
    if as_json:
        _print_json({"error": line, "exit_code": int(exc.status), "kind": type(exc).__name__,
                     **({"errors": every} if every else {})})
    elif every:
        typer.echo("\n".join(f"faultinj: error: {ln}" for ln in every), err=True)
    else:
        typer.echo(f"faultinj: error: {line}", err=True)
        detail = str(exc).splitlines()[1:]
        if detail and exc.status != ExitStatus.USAGE:
            typer.echo("\n".join("  " + ln for ln in detail[-20:]), err=True)
    raise typer.Exit(code=int(exc.status))


def _boundary(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except FaultinjError as exc:
            if _opts["traceback"]:
                raise
            _fail(exc, as_json)
        except KeyboardInterrupt:
            typer.echo("faultinj: interrupted", err=True)
            raise typer.Exit(code=130)
        except typer.Exit:
            raise
        except Exception as exc:
            mapped = from_foreign(exc)
            if mapped is None or _opts["traceback"]:
                raise
            _fail(mapped, as_json)
    return wrapper


def _n(count: int, word: str) -> str:
    """'1 fault', '2 faults'."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def _print_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def _fmt_remaining(rec) -> str:
    if not rec.deadline_ns:
        return "-"
    left = (rec.deadline_ns - time.monotonic_ns()) / 1e9
    return "expired" if left <= 0 else f"{left:.0f}s"


@app.command()
@_boundary
def apply(
    spec: Optional[str] = typer.Argument(None, metavar="SPEC", help="NAME[=VALUE][,FILTER=V...][@HOOK], e.g. "
                                         "psh-ratio=10, drop=5%,proto=udp,dport=53@ingress, ttl-pong. Filters "
                                         "(every fault; 'faultinj set' changes them live): " + FILTERS_SHOWN
                                         + ". Left out with --program."),
    interface: Optional[str] = typer.Argument(None, metavar="INTERFACE", help="The interface to attach to."),
    netns: Optional[str] = NetnsOpt,
    seed: Optional[int] = typer.Option(None, help="Seed for reproducible decisions (default: random, shown)."),
    duration: Optional[str] = typer.Option(None, help="Stop acting after this long, e.g. 30s, 5m (in-kernel deadline)."),
    hook: Optional[str] = typer.Option(None, metavar=HOOKS_SHOWN,
                                       help="Where to attach: xdp, tc ingress or tc egress (or @HOOK in the spec)."),
    replace: bool = typer.Option(False, "--replace", help="Replace an XDP program already on the link; for a "
                                 "time fault, another tool's root qdisc (saved, put back at clear)."),
    tc_mode: str = typer.Option("cls_bpf", metavar=TC_MODES_SHOWN,
                                help="tc attach: cls_bpf (direct-action) or matchall (+ act_bpf)."),
    attach_kind: str = typer.Option("auto", "--attach", metavar="auto|link|netlink",
                                    help="auto: a tcx link (kernel 6.6+) or XDP link where the kernel has them, "
                                    "else a tc filter or XDP through netlink; link or netlink to choose."),
    first: bool = typer.Option(False, "--first", help="tcx link: run before the hook's other tcx programs "
                               "(default: after them)."),
    before: Optional[str] = typer.Option(None, "--before", metavar="FAULT_ID|PROG_ID",
                                         help="tcx link: run just before this fault or program."),
    after: Optional[str] = typer.Option(None, "--after", metavar="FAULT_ID|PROG_ID",
                                        help="tcx link: run just after this fault or program."),
    program: Optional[str] = typer.Option(None, "--program", metavar="FILE.c",
                                          help="Attach your own BPF C program instead of a catalogue fault "
                                          "(compiled with clang; listed by status, removed by clear)."),
    section: Optional[str] = typer.Option(None, help="With --program: the program's section or function name, "
                                          "when the file has several."),
    container: Optional[str] = ContainerOpt,
    pid: Optional[int] = PidOpt,
    netns_path: Optional[str] = NetnsPathOpt,
    peer_of: Optional[str] = typer.Option(None, "--peer-of", metavar="CONTAINER",
                                          help="Attach on the far (host) end of CONTAINER's veth INTERFACE "
                                          "(default eth0), found from the veth's link, not its name."),
    runtime: Optional[str] = RuntimeOpt,
    prio: Optional[int] = typer.Option(None, "--prio", help="tc hooks: the filter's priority, lower runs first "
                                       "(default: after every filter there; a filter before ours that returns a "
                                       "verdict hides every packet from it)."),
    as_json: bool = JsonOpt,
):
    """Attach a fault (or --program FILE.c INTERFACE); it keeps running after faultinj exits.
    Where: INTERFACE here, or in --netns, --netns-path, --pid or --container; --peer-of CONTAINER
    attaches on the far end of the container's veth INTERFACE (default eth0)."""
    rec = api.apply_command(spec, interface, program=program, section=section, seed=seed, duration=duration,
                            peer_of=peer_of, hook=hook, netns_name=netns, replace=replace, tc_mode=tc_mode,
                            prio=prio, netns_path=netns_path, pid=pid, container=container, runtime=runtime,
                            attach_kind=attach_kind, first=first, before=before, after=after)
    if as_json:
        _print_json(rec.to_json())
    else:
        mode = (f"{rec.hook} ({rec.attach_kind}{', ' + rec.attach_mode if rec.hook == 'xdp' else ''}"
                + (f", prio {rec.tc_prio}" if rec.tc_prio else "") + ")")
        until = f", for {duration}" if duration else ""
        seeded = "" if program else f", seed {rec.seed}"
        typer.echo(f"applied {rec.id}: {rec.spec} on {rec.where} via {mode}{seeded}{until}")
        for w in rec.warnings:
            typer.echo(f"faultinj: warning: {w}", err=True)


@app.command()
@_boundary
def status(
    netns: Optional[str] = typer.Option(None, "--netns", "-n", help="Only faults in this namespace."),
    as_json: bool = JsonOpt,
):
    """Every fault faultinj applied: where, hook, spec, seed, deadline, live counters."""
    rows = api.status(netns_name=netns, all_namespaces=netns is None)
    if as_json:
        _print_json([r.to_json() for r in rows])
        return
    if not rows:
        typer.echo("no faults applied")
        return
    head = ("ID", "WHERE", "HOOK", "ATTACH", "SPEC", "SEED", "STATE", "LEFT", "SEEN", "MATCHED", "ACTED")
    named = any(r.record.name for r in rows)   # faults applied under a name (a Chaos Mesh manifest's)
    head += ("NAME",) if named else ()
    table = [head]
    for r in rows:
        c = r.counters or {}
        rec = r.record
        table.append((rec.id, rec.where, rec.hook, rec.attach_kind, f"{rec.fault}={rec.value}{rec.filters}", str(rec.seed),
                      r.state, _fmt_remaining(rec), str(c.get("seen", "?")), str(c.get("matched", "?")),
                      str(c.get("acted", "?"))) + ((rec.name or "-",) if named else ()))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for r in rows:
        if r.detail:
            typer.echo(f"{r.record.id}: {r.detail}")
        if r.mechanism:
            typer.echo(f"{r.record.id}: {r.mechanism}")
        if r.journal_lost:
            typer.echo(f"{r.record.id}: {r.journal_lost} journal events lost (overwritten: it keeps the last 4096): "
                       "read them as they come with 'faultinj journal --follow'")
        for w in r.warnings or ():
            typer.echo(f"{r.record.id}: {w}")
        if r.refused:
            typer.echo(f"{r.record.id}: {_n(r.refused, 'packet')} left unchanged: the kernel refused the change "
                       "(truncate: tc keeps the headers up to the L4 checksum; cut longer, or truncate at xdp)")
        if r.maps is not None:
            typer.echo(f"{r.record.id}: custom program; maps: "
                       + (", ".join(f"{m['name']} (id {m['id']})" for m in r.maps) or "none")
                       + f", pinned in {r.record.pin_dir}")


@app.command("set")
@_boundary
def set_(
    spec: str = typer.Argument(..., metavar="SPEC", help="NAME=VALUE with the new value, e.g. psh-ratio=5 "
                               "(or NAME with --seed, --duration or new filters)."),
    interface: Optional[str] = typer.Argument(None, metavar="[INTERFACE]", help="The interface the fault is on "
                                              "(in whichever namespace has faults on it; or give --id alone)."),
    netns: Optional[str] = NetnsOpt,
    seed: Optional[int] = typer.Option(None, help="A new seed."),
    duration: Optional[str] = typer.Option(None, help="A new deadline, counted from now."),
    fault_id: Optional[str] = _id_opt("Which fault (by id alone, or when several match)."),
    container: Optional[str] = ContainerOpt,
    pid: Optional[int] = PidOpt,
    netns_path: Optional[str] = NetnsPathOpt,
    runtime: Optional[str] = RuntimeOpt,
    as_json: bool = JsonOpt,
):
    """Change a running fault (a map write: no reload, no packet missed): SPEC INTERFACE, as apply, or
    SPEC --id ID."""
    rec = api.set_command(spec, interface, netns_name=netns, seed=seed, duration=duration, fault_id=fault_id,
                          netns_path=netns_path, pid=pid, container=container, runtime=runtime)
    if as_json:
        _print_json(rec.to_json())
    else:
        typer.echo(f"set {rec.id}: {rec.spec} on {rec.where}, seed {rec.seed}")


@app.command()
@_boundary
def clear(
    interface: Optional[str] = typer.Argument(None, help="Clear every fault on this interface."),
    netns: Optional[str] = NetnsOpt,
    all_: bool = typer.Option(False, "--all", help="Clear every fault faultinj applied (every user's: says "
                              "how many and whose; --mine for yours only)."),
    mine: bool = typer.Option(False, "--mine", help="Only the faults you applied (the sudo user, else this "
                              "user); alone: all of them."),
    fault_id: Optional[str] = _id_opt("Clear one fault by id."),
    container: Optional[str] = typer.Option(None, "--container", "-c", help="Clear the faults of this container "
                                            "(in it and on its veth peers; also after it is gone)."),
    pid: Optional[int] = typer.Option(None, "--pid", help="Clear the faults in this process's namespace."),
    netns_path: Optional[str] = typer.Option(None, "--netns-path", help="Clear the faults in this namespace file's "
                                             "namespace."),
    runtime: Optional[str] = RuntimeOpt,
    name: Optional[str] = typer.Option(None, "--name", help="Clear every fault applied under this name "
                                       "(a Chaos Mesh manifest's metadata.name: see 'faultinj status')."),
    as_json: bool = JsonOpt,
):
    """Remove exactly what faultinj attached (never another tool's filters or qdiscs)."""
    removed = api.clear(interface, netns_name=netns, all_faults=all_, fault_id=fault_id, netns_path=netns_path,
                        pid=pid, container=container, runtime=runtime, mine=mine, name=name)
    if as_json:
        _print_json([r.to_json() for r in removed])
        return
    if not removed:
        typer.echo("nothing to clear")
    for r in removed:
        final = r.final_counters   # read after detaching: every packet it acted on
        typer.echo(f"cleared {r.id}: {r.spec} on {r.where}"
                   + (f" (acted on {final['acted']} of {_n(final['seen'], 'packet')})" if final else ""))
    if removed and (all_ or mine):   # a shared machine: how many, and whose
        typer.echo(f"cleared {_n(len(removed), 'fault')} ({api.whose(removed)})"
                   + ("" if mine else "; 'faultinj clear --mine' clears only yours"))


@app.command()
@_boundary
def faults(as_json: bool = JsonOpt):
    """The fault catalogue: names, values, defaults and hooks."""
    if as_json:
        _print_json([f.describe() for f in api.CATALOGUE.values()])
        return
    for f in api.CATALOGUE.values():
        v = f.value
        usage = f"{f.name}[={v.name}]" if not v.required else f"{f.name}={v.name}"
        opts = "".join(f"[,{o.name}=...]" for o in f.options)
        typer.echo(f"{usage}{opts}[@HOOK]\n    {f.summary}\n    {v.name}: {v.help}")
        for o in f.options:
            typer.echo(f"    {o.name}= (default {o.default}): {o.help}")
        typer.echo(f"    hooks: {', '.join(f.hooks)} (default {f.default_hook})\n    counts: {f.unit}\n")


@app.command()
@_boundary
def journal(
    interface: Optional[str] = typer.Argument(None, help="Only the faults on this interface."),
    netns: Optional[str] = NetnsOpt,
    fault_id: Optional[str] = _id_opt("Only this fault."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing events as they come (Ctrl-C stops)."),
    duration: Optional[str] = typer.Option(None, help="With --follow: stop after this long, e.g. 10s."),
    as_json: bool = JsonOpt,
):
    """What the faults did, packet by packet: time, fault, where, action, flow, IP id, TCP seq, and the
    spec in force then. Each fault keeps its last 4096 events; reading takes nothing away (any number of
    readers each see every event); --follow prints the events from now on."""
    seconds = api.journal_follow_seconds(duration, follow)
    with api.journal(interface, netns_name=netns, fault_id=fault_id, from_start=not follow) as reader:
        if not follow:
            events = reader.read()
            lost = {k: v for k, v in reader.lost().items() if v}
            if as_json:
                _print_json({"events": [e.to_json() for e in events], "lost": lost})
            else:
                for e in events:
                    typer.echo(str(e))
                typer.echo(f"{_n(len(events), 'event')} from {_n(len(reader.records), 'fault')}", err=True)
            for fid, n in lost.items():
                typer.echo(f"{fid}: {n} older events overwritten (it keeps the last 4096): read with --follow "
                           "while traffic runs", err=True)
            return
        end = None if seconds is None else time.monotonic() + seconds
        try:
            while end is None or time.monotonic() < end:
                for e in reader.read(timeout_ms=200):
                    typer.echo(json.dumps(e.to_json()) if as_json else str(e))
        except KeyboardInterrupt:
            pass


@app.command()
@_boundary
def trace(
    expression: Optional[List[str]] = typer.Argument(None, help="A tcpdump-style filter expression instead of the "
                                                     "filter flags, e.g. 'tcp and dst port 80 and host 10.0.0.2' "
                                                     "(see README: the pcap-filter subset)."),
    icmp: bool = typer.Option(False, "--icmp", help="Only ICMP and ICMPv6."),
    tcp: bool = typer.Option(False, "--tcp", help="Only TCP."),
    udp: bool = typer.Option(False, "--udp", help="Only UDP."),
    proto: Optional[str] = typer.Option(None, help="Only this protocol (name or number)."),
    src: Optional[str] = typer.Option(None, help="Source address or network."),
    dst: Optional[str] = typer.Option(None, help="Destination address or network."),
    sport: Optional[str] = typer.Option(None, help="Source port or range."),
    dport: Optional[str] = typer.Option(None, help="Destination port or range."),
    flags: Optional[str] = typer.Option(None, help="TCP flags present/absent, e.g. +syn-ack."),
    vlan: Optional[int] = typer.Option(None, help="VLAN id."),
    mark: Optional[str] = typer.Option(None, help="The skb mark, VALUE or VALUE/MASK (e.g. 0x10/0xff)."),
    count: Optional[int] = typer.Option(None, help="Stop after this many packets, each shown with all its hops (a "
                                        "ping is two packets: request and reply; a packet counts when first seen)."),
    duration: Optional[str] = typer.Option(None, help="Stop after this long, e.g. 10s (default: until Ctrl-C)."),
    pcap_out: Optional[str] = typer.Option(None, "--pcap", help="Write each traced hop's frame (first 128 bytes)."),
    functions: Optional[str] = typer.Option(None, "--functions", help="Also each kernel function taking an sk_buff "
                                            "whose name matches this regular expression (from BTF; fentry), "
                                            "with the time since the packet's previous step."),
    max_functions: int = typer.Option(64, "--max-functions", help="Refuse --functions matching more than this."),
    faults: bool = typer.Option(True, "--faults/--no-faults",
                                help="Show where faultinj faults acted (their journals)."),
    stats: bool = typer.Option(False, "--stats", help="Count packets per interface, hook and drop reason in the "
                               "kernel (no line per hop: what tracing every packet of a busy link costs least)."),
    as_json: bool = JsonOpt,
):
    """Where packets went, hop by hop across interfaces and namespaces, and where they died (with the
    kernel's drop reason, or the faultinj fault that took them). BTF raw tracepoints; filters run in the kernel."""
    req = api.trace_request(expression, icmp=icmp, tcp=tcp, udp=udp, proto=proto, src=src, dst=dst, sport=sport,
                            dport=dport, flags=flags, vlan=vlan, mark=mark, count=count, duration=duration,
                            functions=functions, max_functions=max_functions, stats=stats, pcap=pcap_out)
    words = req.words
    if stats:
        if not as_json:
            typer.echo(f"counting {', '.join(words) or 'every packet'}"
                       + (f" for {duration}" if duration else " (Ctrl-C stops)"), err=True)
        rows = api.trace_stats(req.match, req.seconds, req.functions)
        if as_json:
            _print_json({"counts": rows})
            return
        typer.echo(f"{'packets':>10} {'bytes':>12}  {'namespace':<16} {'interface':<14} {'':<4} {'hook':<18} reason")
        for r in rows:
            typer.echo(f"{r['packets']:>10} {r['bytes']:>12}  {r['netns_name']:<16} {r['ifname']:<14} "
                       f"{r['direction']:<4} {r['point']:<18} {r['reason']}")
        return

    # hops stream: printed, counted and written to the pcap as they come, never all kept (a trace
    # of an hour holds flat memory); the pcap is written by a thread of its own
    seen = {"hops": 0, "packets": set() if count else None}
    frames: "queue.Queue | None" = None
    writer = None
    if pcap_out:
        import queue
        import threading

        frames = queue.Queue(maxsize=100_000)
        written: list = [0, None]   # frames written, what went wrong

        def write_pcap():
            try:
                written[0] = api.write_pcap(pcap_out, iter(frames.get, None))
            except BaseException as exc:   # raised here once tracing ends
                written[1] = exc
                while frames.get() is not None:   # keep taking frames: the tracer never blocks
                    pass

        writer = threading.Thread(target=write_pcap, daemon=True)
        writer.start()
    printing = [True]

    def closed_pipe() -> bool:   # the reader left (`| head`): stop tracing, keep what was traced
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())   # nothing more for the closed pipe, not even at exit
        os.close(devnull)
        printing[0] = False
        return False

    def flush():   # once per read: a write per hop cost more than formatting it (bench 8c)
        if printing[0]:
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                return closed_pipe()
        return True

    def show(hop):
        seen["hops"] += 1
        if seen["packets"] is not None:
            seen["packets"].add(hop.key)
        if frames is not None and hop.frame:
            # each hop carries its wall time (the journeys' and the journal's clock)
            frames.put(api.PcapRecord(hop.wall_ns, max(hop.length, len(hop.frame)), hop.frame))
        if not printing[0]:
            return True
        try:
            sys.stdout.write((json.dumps(hop.to_json()) if as_json else str(hop)) + "\n")
        except BrokenPipeError:
            return closed_pipe()
        return True

    def started():   # every program attached: from now on each packet is seen by all of them (stderr: JSON too)
        typer.echo(f"tracing {', '.join(words) or 'every packet'}" + (f" for {duration}" if duration else "")
                   + (f", {count} packets" if count else "") + ("" if duration or count else " (Ctrl-C stops)"),
                   err=True)

    try:
        _, lost = api.trace(req.match, count=count, duration=req.seconds, on_hop=show, with_faults=faults,
                            functions=req.functions, on_start=started, keep=False, on_batch=flush)
    finally:
        if writer is not None:
            frames.put(None)
            writer.join()
    if seen["packets"] is not None:
        typer.echo(f"traced {len(seen['packets'])} packets ({seen['hops']} hops)", err=True)
    else:
        typer.echo(f"traced {seen['hops']} hops", err=True)
    if lost:
        typer.echo(f"{lost} hops lost: the kernel's queue was full (filter more narrowly)", err=True)
    if pcap_out:
        if written[1] is not None:
            raise written[1]
        typer.echo(f"{written[0]} frames written to {pcap_out}", err=True)


@app.command()
@_boundary
def demo(
    pcap_dir: Optional[str] = typer.Option(None, help="Save each scenario's captures as pcaps here."),
    seed: Optional[int] = typer.Option(None, help="Seed of every fault (default: the scenario files' own)."),
    keep: bool = typer.Option(False, "--keep", help="Leave the labs' namespaces in place."),
    as_json: bool = JsonOpt,
):
    """Replay the seed article's faults (the shipped scenario files), each in a throw-away lab, verified."""
    from . import demo as demo_mod

    verdicts = demo_mod.run(pcap_dir=pcap_dir, seed=seed, keep=keep, progress=lambda msg: typer.echo(msg, err=True))
    ok = all(v.ok for v in verdicts)
    if as_json:
        _print_json({"ok": ok, "scenarios": [v.to_json() for v in verdicts]})
    else:
        for v in verdicts:
            _print_verdict(v)
        typer.echo(f"\n{'all checks hold' if ok else 'SOME CHECKS FAILED'}")
    if not ok:
        raise typer.Exit(code=int(ExitStatus.FAILED))


def _print_checks(checks) -> None:
    for c in checks:
        ci = f"  CI [{c.ci[0]:.4f}, {c.ci[1]:.4f}]" if c.ci else ""
        typer.echo(f"  {'✓' if c.ok else '✗'} {c.name}: {c.observed} (expected {c.expected}){ci}")


def _print_verdict(r) -> None:
    """One verdict (verdict.Verdict) as text: what was run, each check, what it left to look at."""
    typer.echo(f"\n{r.scenario}{f' ({r.path})' if r.path else ''}: {'PASS' if r.ok else 'FAIL'}"
               + (f" in {r.seconds:.1f}s" if r.seconds else ""))
    for name, counters in r.counters.items():
        typer.echo(f"  fault {name}: {counters}")
    for key, value in r.facts.items():
        typer.echo(f"  {key}: {value}")
    _print_checks(r.checks)
    for err in r.errors:
        typer.echo(f"  ✗ error: {err}")
    for name, path in r.pcaps.items():
        typer.echo(f"  pcap {name}: {path}")
    for i, journey in enumerate(r.journeys, 1):
        typer.echo(f"  journey {i}:")
        for hop in journey:
            typer.echo(f"    {hop}")
    for name, sw in r.ovs.items():
        _print_ovs(name, sw)


def _print_ovs(name: str, sw: dict) -> None:
    typer.echo(f"  ovs {name} ({sw['bridge']}): ovs-ofctl dump-flows")
    for r in sw["table"]:
        typer.echo(f"    table={r['table']} n_packets={r['n_packets']} n_bytes={r['n_bytes']} {r['rule']}")
    typer.echo(f"  ovs {name}: megaflows (ovs-appctl dpif/dump-flows), {len(sw['megaflows'])}")
    for m in sw["megaflows"]:
        typer.echo(f"    {m['flow']}")
    if sw.get("megaflows_error"):
        typer.echo(f"    (not read: {sw['megaflows_error']})")


KernelOpt = typer.Option(None, "--kernel", "-k", metavar="KERNEL",
                         help="Run on this kernel (repeatable: one column each): a Debian package "
                         "(linux-image-6.1.0-57-amd64, linux-image-6.12.118+deb12-amd64, linux-image-6.12-amd64, "
                         "linux-image-amd64), your own build /path/bzImage[:/path/modules], or 'host' (this "
                         "machine's kernel, no guest). A namespace-only lab runs inside a guest of that kernel.")
OvsOpt = typer.Option(None, "--ovs", metavar="DIR", help="Run the ovs bridges on the Open vSwitch build installed "
                      "under DIR (repeatable: one column each; with --kernel, every pair).")
RepeatOpt = typer.Option(1, "--repeat", "-n", help="Run each side N times: each verdict is k of N.")


ConfidenceOpt = typer.Option(None, "--confidence", metavar="C",
                             help="The confidence level of every statistical check that states none (default "
                             "$FAULTINJ_CONFIDENCE, else 0.999). Judging K checks at once, give 1 - a/K to keep "
                             "the chance of any false alarm at a.")


@app.command()
@_boundary
def run(
    files: Optional[List[str]] = typer.Argument(None, help="Scenario files (YAML)."),
    pcap_dir: str = typer.Option("faultinj-captures", help="Where every capture is saved as pcap."),
    junit: Optional[str] = typer.Option(None, help="Write a JUnit XML report here (with --kernel: one testsuite "
                                        "per kernel)."),
    report: Optional[str] = typer.Option(None, "--report", metavar="FILE.html",
                                         help="Write a self-contained HTML report here: every verdict, and plots "
                                         "where a distribution is the answer (needs matplotlib: faultinj[report])."),
    keep: bool = typer.Option(False, "--keep", help="Keep the lab up afterwards (faultinj lab down FILE)."),
    kernel: Optional[List[str]] = KernelOpt,
    ovs: Optional[List[str]] = OvsOpt,
    repeat: int = RepeatOpt,
    schema: bool = typer.Option(False, "--schema", help="Print the scenario file reference (every key, traffic "
                                "and expectation kind; docs/scenarios.md) and exit."),
    confidence: Optional[float] = ConfidenceOpt,
    as_json: bool = JsonOpt,
):
    """Replay scenarios end to end: lab up, faults, traffic, captures, verdicts, teardown.
    With --kernel/--ovs/--repeat: a verdict matrix, one column per kernel (and OVS build), one row
    per expectation; exit 0 only when every column passes every run. --schema: what a scenario file
    may hold. A Chaos Mesh NetworkChaos manifest is applied to Docker containers instead (see 'Chaos
    Mesh manifests')."""
    if schema:
        from . import scenario

        typer.echo(scenario.schema_reference(), nl=False)
        return
    from . import scenario

    done = scenario.run_files(files, pcap_dir=pcap_dir, junit=junit, report=report, keep=keep, kernels=kernel,
                              ovs=ovs, repeat=repeat, confidence=confidence,
                              progress=lambda name, m: typer.echo(f"[{name}] {m}", err=True))
    if done.report:
        typer.echo(f"report: {done.report}", err=True)
    if as_json:
        _print_json(done.to_json())
    elif done.applied is not None:
        for line in done.applied.lines():
            typer.echo(line)
    elif done.matrices:
        for m in done.matrices:
            typer.echo(f"\n{m.scenario.name} ({m.scenario.path}): {'PASS' if m.ok else 'FAIL'}"
                       + (f", {repeat} runs per column" if repeat > 1 else ""))
            _print_table(m.table())
    else:
        for r in done.reports:
            _print_verdict(r)
    if not done.ok:
        raise typer.Exit(code=int(ExitStatus.FAILED))


def _print_table(rows: list[list[str]], limit: int = 48) -> None:
    cut = lambda s: s if len(s) <= limit else s[: limit - 1] + "…"   # noqa: E731
    rows = [[cut(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


@app.command()
@_boundary
def compare(
    file: str = typer.Argument(..., help="Scenario file (YAML)."),
    before: Optional[str] = typer.Option(None, "--before", metavar="SIDE",
                                         help="Without the fix: a kernel (as --kernel), ovs=DIR, or KERNEL,ovs=DIR."),
    after: Optional[str] = typer.Option(None, "--after", metavar="SIDE", help="With the fix (same forms)."),
    repeat: int = RepeatOpt,
    pcap_dir: str = typer.Option("faultinj-captures", help="Where every capture is saved as pcap."),
    as_json: bool = JsonOpt,
):
    """Show that a fix holds: exit 0 iff the scenario FAILs before (N of N runs) and PASSes after
    (N of N). Exit 1 with the reason otherwise (both pass: the scenario does not catch the bug;
    both fail: the fix does not hold; mixed runs: not conclusive); 2 for bad input."""
    from . import scenario

    scn = scenario.load(file)
    c = scenario.compare(scn, before, after, repeat=repeat, pcap_dir=pcap_dir,
                         progress=lambda m: typer.echo(f"[{scn.name}] {m}", err=True))
    if as_json:
        _print_json(c.to_json())
    else:
        typer.echo(f"{scn.name}: before {c.before.side.label}: {c.before.describe()} in {c.before.seconds:.1f} s; "
                   f"after {c.after.side.label}: {c.after.describe()} in {c.after.seconds:.1f} s")
        if c.flipped:
            typer.echo("flipped:")
            _print_table([["check", "before", "after"]] + [
                [n, f"{'✓' if b[0] == b[1] else '✗'} {b[2]}", f"{'✓' if a[0] == a[1] else '✗'} {a[2]}"]
                for n, b, a in c.flipped])
        typer.echo(c.reason)
    if not c.ok:
        raise typer.Exit(code=int(ExitStatus.FAILED))


@app.command()
@_boundary
def bisect(
    file: str = typer.Argument(..., help="Scenario file (YAML)."),
    good: Optional[str] = typer.Option(None, "--good", metavar="PACKAGE", help="A kernel package with one verdict."),
    bad: Optional[str] = typer.Option(None, "--bad", metavar="PACKAGE", help="A kernel package with the other."),
    repeat: int = RepeatOpt,
    pcap_dir: str = typer.Option("faultinj-captures", help="Where every capture is saved as pcap."),
    as_json: bool = JsonOpt,
):
    """Find the first Debian kernel whose verdict differs: over apt's packages of one flavour between
    --good and --bad (in Debian version order), both ends then about log2(n) guests. Exit 0 when it
    names the version; 1 when the ends give the same verdict or a verdict is mixed/an error
    between them; 2 for bad input (unknown package, different flavours, nothing between)."""
    from . import scenario

    scn = scenario.load(file)
    b = scenario.bisect(scn, good, bad, repeat=repeat, pcap_dir=pcap_dir,
                        progress=lambda m: typer.echo(f"[{scn.name}] {m}", err=True))
    if as_json:
        _print_json(b.to_json())
    else:
        for i, (package, version) in enumerate(b.versions):
            cell = b.tried.get(i)
            mark = " <- first different" if i == b.first_different else ""
            typer.echo(f"  {package:36} {version:22} {cell.describe() if cell else '-'}"
                       f"{f' ({cell.seconds:.0f} s)' if cell else ''}{mark}")
        typer.echo(f"{b.reason} ({b.boots} boots for {len(b.versions)} kernels)")
    if not b.ok:
        raise typer.Exit(code=int(ExitStatus.FAILED))


lab_app = typer.Typer(cls=_Group, help="Build a scenario's lab for interactive work.", no_args_is_help=True)
app.add_typer(lab_app, name="lab")


@lab_app.command("up")
@_boundary
def lab_up(file: str = typer.Argument(..., help="Scenario file whose lab to build."), as_json: bool = JsonOpt):
    """Build the lab (namespaces, links, bridges) and leave it up."""
    from . import scenario

    data = scenario.lab_up(file, progress=lambda m: typer.echo(m, err=True))
    if as_json:
        _print_json(data)
    else:
        for host, ns in data["hosts"].items():
            typer.echo(f"{host}: ip netns exec {ns} ...   (faultinj ... --netns {ns})")


@lab_app.command("down")
@_boundary
def lab_down(name: str = typer.Argument(..., help="Scenario file or lab name.")):
    """Remove a lab built with 'lab up' (and faults on its links)."""
    from . import scenario

    data = scenario.lab_down(name)
    typer.echo(f"lab {data['name']} removed ({', '.join(data['namespaces'])})")


@lab_app.command("status")
@_boundary
def lab_status(as_json: bool = JsonOpt):
    """Labs that are up."""
    from . import scenario

    labs = scenario.lab_status()
    if as_json:
        _print_json(labs)
        return
    if not labs:
        typer.echo("no labs up")
    for lab in labs:
        state = "up" if lab["present"] else "PARTLY GONE"
        typer.echo(f"{lab['name']}: {state}, " + ", ".join(f"{h}={ns}" for h, ns in lab["hosts"].items()))


@app.command()
@_boundary
def verify(
    interface: str = typer.Argument(..., help="Where to capture."),
    netns: Optional[str] = NetnsOpt,
    having: str = typer.Option(..., help="The property whose rate is judged, e.g. psh."),
    of: str = typer.Option("all", help="Which packets count, e.g. 'tcp and data'."),
    p: Optional[float] = typer.Option(None, help="Expected probability."),
    ratio: Optional[int] = typer.Option(None, help="Expected one-in-N."),
    duration: Optional[str] = typer.Option("10s", help="Capture this long."),
    count: Optional[int] = typer.Option(None, help="Stop after this many 'of' packets."),
    fault_id: Optional[str] = _id_opt("Also judge this fault's counters."),
    direction: str = typer.Option("in", metavar="[in|out|any]", help="Which packets to capture."),
    pcap: Optional[str] = typer.Option(None, help="Save the capture here."),
    confidence: Optional[float] = ConfidenceOpt,
    as_json: bool = JsonOpt,
):
    """Capture and judge a fault's effect on a lab built by other means (VMs)."""
    from .verify import verify as do_verify

    res = do_verify(interface, netns_name=netns, duration=duration, count=count, of=of, having=having, p=p,
                    ratio=ratio, fault_id=fault_id, direction=direction, pcap=pcap, confidence=confidence)
    if as_json:
        _print_json(res.to_json())
    else:
        _print_verdict(res)
    if not res.ok:
        raise typer.Exit(code=int(ExitStatus.FAILED))


@app.command()
@_boundary
def replay(
    capture: str = typer.Argument(..., help="Input pcap or pcapng (Ethernet; nanosecond pcap and gzip too)."),
    specs: list[str] = typer.Argument(..., help="One or more fault specs, run in order."),
    out: str = typer.Option(..., "--out", "-o", help="Where to write what would leave the hook: pcapng when "
                            "named *.pcapng, else pcap."),
    seed: Optional[int] = typer.Option(None, help="Seed (default: random, shown)."),
    as_json: bool = JsonOpt,
):
    """Run faults over a capture offline (BPF_PROG_TEST_RUN): dropped packets omitted, changed ones rewritten,
    duplicated ones written twice."""
    res = api.replay(capture, specs, out, seed=seed)
    if as_json:
        _print_json(res.to_json())
        return
    typer.echo(f"{res.packets} packets in, {res.written} written to {out} (seed {res.seed}): "
               f"{len(res.dropped)} dropped, {len(res.changed)} changed, {len(res.duplicated)} duplicated")
    for spec, c in res.counters.items():
        typer.echo(f"  {spec}: seen {c['seen']}, matched {c['matched']}, acted {c['acted']}")
    for what, which in (("dropped (packet numbers from 1)", res.dropped), ("changed", res.changed),
                        ("duplicated", res.duplicated)):
        if which:
            typer.echo(f"  {what}: {', '.join(str(i + 1) for i in which[:30])}" + (" ..." if len(which) > 30 else ""))


@app.command()
@_boundary
def doctor(as_json: bool = JsonOpt,
           kernel: Optional[List[str]] = typer.Option(
               None, "--kernel", "-k", help="Also boot this kernel in a QEMU guest and probe it there, one column "
               "per kernel (repeatable): a Debian package (linux-image-6.1.0-57-amd64, "
               "linux-image-6.12.118+deb12-amd64, linux-image-6.12-amd64, linux-image-amd64), "
               "/path/bzImage[:/path/modules], or 'host'.")):
    """What this machine can do: privileges, BPF, hooks, toolchain; probed in a throw-away namespace.
    With --kernel, the same probes in a guest running each kernel, side by side."""
    from . import doctor as doc

    if kernel:
        cols = doc.across(kernel, progress=lambda m: typer.echo(m, err=True))
        ok = cols[0]["ok"]
        if as_json:
            out = {"ok": ok, "kernel": cols[0]["release"], "probes": cols[0]["probes"], "columns": cols}
            if len(cols) == 2:
                out["guest"] = {k: cols[1][k] for k in ("release", "accel", "ok", "probes")}
            _print_json(out)
        else:
            _print_table(doc.table(cols))
            typer.echo("default feature set works here" if ok else "the default feature set does NOT work here")
        if not ok:
            raise typer.Exit(code=int(ExitStatus.ENVIRONMENT))
        return
    probes = doc.run()
    ok = doc.healthy(probes)
    if as_json:
        _print_json({"ok": ok, "kernel": os.uname().release, "probes": [p.to_json() for p in probes]})
    else:
        for p in probes:
            mark = "✓" if p.ok else ("✗" if p.required else "-")
            fix = f"  → {p.fix}" if not p.ok and p.fix else ""
            typer.echo(f"{mark} {p.name}: {p.detail}  [{p.enables}]{fix}")
        typer.echo("default feature set works" if ok else "the default feature set does NOT work here")
    if not ok:
        raise typer.Exit(code=int(ExitStatus.ENVIRONMENT))


@app.command()
@_boundary
def agent(stdio: bool = typer.Option(True, "--stdio", help="Serve on stdin/stdout (what ssh gives)."),
          virtio_port: bool = typer.Option(False, "--virtio-port",
                                           help="Serve on the virtio-serial port of a VM faultinj booted.")):
    """Serve faultinj to another machine, one JSON request a line: how scenarios drive VM hosts
    and machines reached through ssh (lab.remote: ssh: HOST, command: 'faultinj agent --stdio')."""
    from .guest.server import main as agent_main

    agent_main(["--virtio-port"] if virtio_port else ["--stdio"])


@app.command()
@_boundary
def reap(as_json: bool = JsonOpt):
    """Finish what killed faultinj processes left, remove expired faults and orphaned labs."""
    done = api.reap()
    if as_json:
        _print_json([r.to_json() for r in done])
    else:
        for r in done:
            typer.echo(f"reaped {r.id}: {r.spec} on {r.where}")
        if not done:
            typer.echo("nothing to reap")


@app.command()
@_boundary
def metrics(
    listen: str = typer.Option("127.0.0.1:9469", help="ADDRESS:PORT to serve /metrics on (loopback by default; "
                               "0.0.0.0:PORT serves every interface)."),
    duration: Optional[str] = typer.Option(None, help="Stop after this long, e.g. 10m (default: until Ctrl-C)."),
):
    """Serve Prometheus metrics of every fault: seen, matched, acted, journal losses, deadline, state;
    labelled with id, spec, interface, netns, target and hook. Read afresh on every scrape."""
    from .metrics import serve

    seconds = api.parse_duration(duration)
    server, _thread = serve(listen)
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving faultinj metrics on http://{shown}:{port}/metrics"
               + (f" for {duration}" if duration else " (Ctrl-C stops)"), err=True)
    try:
        end = None if seconds is None else time.monotonic() + seconds
        while end is None or time.monotonic() < end:
            time.sleep(0.2 if end is None else max(0.0, min(0.2, end - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()


def _only_the_command_asked(argv: list[str]) -> typer.Typer:
    """Typer turns every command into click parameters at each start (~10 ms for all of them): when
    argv names a command (the first word that is not an option: the group's own options are flags),
    the app with that command alone. The group's help, a bare `faultinj` and an unknown name get
    the whole app."""
    import copy

    word = next((a for a in argv if not a.startswith("-")), None)
    if word is None:
        return app
    one = copy.copy(app)
    one.registered_commands = [c for c in app.registered_commands
                               if (c.name or typer.main.get_command_name(c.callback.__name__)) == word]
    one.registered_groups = [g for g in app.registered_groups if g.name == word]
    return one if one.registered_commands or one.registered_groups else app


def main() -> None:
    _only_the_command_asked(sys.argv[1:])()


if __name__ == "__main__":
    main()
