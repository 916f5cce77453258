"""The command line: output formats, exit codes, one-line errors."""

import json

import pytest
from conftest import cli_runner

from faultinj.cli import app
from faultinj.errors import ExitStatus
from faultinj.faults import CATALOGUE

runner = cli_runner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_faults_json_lists_the_catalogue():
    r = invoke("faults", "--json")
    assert r.exit_code == 0
    assert [f["name"] for f in json.loads(r.stdout)] == list(CATALOGUE)
    corrupt = next(f for f in json.loads(r.stdout) if f["name"] == "corrupt")
    assert [o["name"] for o in corrupt["options"]] == ["csum", "bits"]


def test_faults_text_shows_usage_and_hooks():
    r = invoke("faults")
    assert r.exit_code == 0 and "psh-ratio=N[@HOOK]" in r.stdout and "hooks: xdp" in r.stdout


@pytest.mark.parametrize("args,code,needle", [
    (("apply", "psh-ratoi=10", "x0"), ExitStatus.USAGE, "did you mean 'psh-ratio'"),
    (("apply", "drop=150%", "x0"), ExitStatus.USAGE, "from 0% to 100%"),
    (("apply", "drop=1%", "x0", "--duration", "soon"), ExitStatus.USAGE, "bad duration"),
    (("apply", "drop=1%", "x0", "--tc-mode", "u32"), ExitStatus.USAGE, "unknown --tc-mode"),
    (("apply", "drop=1%@xdp", "x0", "--tc-mode", "matchall"), ExitStatus.USAGE, "not xdp"),
    (("apply", "drop=1%", "x0", "--seed", "-3"), ExitStatus.USAGE, "bad seed"),
    (("apply", "drop=1%", "x0", "--hook", "sideways"), ExitStatus.USAGE, "unknown hook"),
    (("apply", "drop=1%", "x0", "--netns", "no-such-ns-fi"), ExitStatus.USAGE, "namespace 'no-such-ns-fi' not found"),
    (("set", "drop", "x0"), ExitStatus.USAGE, "nothing to change"),
    (("clear", "--fault", "fdeadbeef"), ExitStatus.STATE, "no fault with id"),
    (("verify", "x0", "--having", "psh", "--direction", "sideways"), ExitStatus.USAGE, "unknown --direction"),
    (("verify", "nosuch0", "--having", "psh", "--p", "0.1", "--duration", "1s"), ExitStatus.USAGE,
     "cannot capture on nosuch0 (No such device)"),
    (("clear",), ExitStatus.USAGE, "say what to clear"),
    (("clear", "--id", "fdeadbeef"), ExitStatus.STATE, "no fault with id"),
])
def test_errors_are_one_line_with_an_exit_code(args, code, needle):
    r = invoke(*args)
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faultinj: error:") and needle in lines[0]


def test_status_json_and_clear_in_a_lab(lab):
    a = lab.a
    r = invoke("apply", "drop=0", a.ifname, "--netns", a.netns, "--seed", "3", "--json")
    assert r.exit_code == 0, r.output
    applied = json.loads(r.stdout)
    assert applied["seed"] == 3 and applied["hook"] == "tc-egress"
    r = invoke("status", "--json")
    [st] = json.loads(r.stdout)
    assert st["id"] == applied["id"] and st["state"] == "active" and set(st["counters"]) == {"seen", "matched", "acted"}
    r = invoke("status")
    assert applied["id"] in r.stdout and "MATCHED" in r.stdout
    r = invoke("set", "drop=2%", a.ifname, "--netns", a.netns)
    assert r.exit_code == 0 and "drop=0.02" in r.stdout and not r.stderr
    r = invoke("set", a.ifname, "drop=3%", "--netns", a.netns)     # the old order, with a note
    assert r.exit_code == 0 and "drop=0.03" in r.stdout and "old order" in r.stderr
    r = invoke("set", "psh-ratio=2", a.ifname, "--netns", a.netns)
    assert r.exit_code == ExitStatus.STATE and "no psh-ratio fault" in r.stderr
    r = invoke("clear", a.ifname, "--netns", a.netns, "--json")
    assert [c["id"] for c in json.loads(r.stdout)] == [applied["id"]]
    assert invoke("status").stdout.strip() == "no faults applied"


def test_set_takes_the_old_order_with_a_note():
    r = invoke("set", "x0", "drop")
    assert r.exit_code == ExitStatus.USAGE
    note, error = r.stderr.strip().splitlines()
    assert note.startswith("faultinj: note:") and "faultinj set drop x0" in note and "nothing to change" in error


@pytest.mark.parametrize("command,shown", [
    ("apply", ["--hook [xdp|ingress|egress]", "--tc-mode [cls_bpf|matchall]", "SPEC INTERFACE"]),
    ("set", ["SPEC INTERFACE", "--id, --fault ID"]),
    ("clear", ["--id, --fault ID"]),
    ("journal", ["--id, --fault ID"]),
    ("verify", ["--direction [in|out|any]", "--id, --fault ID"]),
])
def test_help_shows_choices_and_one_name_for_a_fault_id(command, shown):
    r = invoke(command, "--help")
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    for s in shown:
        assert s in text, (s, r.stdout)


# ---- commands that answer at once: no command imports what it does not use ----------------------

_IMPORTS_OF = """
import runpy, sys
sys.argv = ["faultinj", *sys.argv[1:]]
try:
    runpy.run_module("faultinj.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(" ".join(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
"""
HEAVY = {"pyroute2", "scapy", "yaml", "matplotlib", "numpy"}   # ~180 ms, ~300 ms, ...


def _imported_by(*args) -> set[str]:
    import subprocess
    import sys

    # cwd "/": the installed faultinj, not the source tree's
    r = subprocess.run([sys.executable, "-c", _IMPORTS_OF, *args], capture_output=True, text=True, cwd="/")
    return set(r.stderr.strip().splitlines()[-1].split())


def test_status_help_set_and_clear_import_no_netlink_library_nor_scapy(lab):
    """`status`, `--help`, `faults`, a `set` (a map write) and a `clear` of an interface without
    faults load neither pyroute2 nor scapy nor yaml: they read files, maps and the link table
    (if_nameindex). Looking an interface up imported pyroute2 (~180 ms) before."""
    import faultinj

    b = lab.b
    for args in (["--help"], ["faults"], ["status"], ["clear", b.ifname, "--netns", b.netns],
                 ["set", "drop=0.5", b.ifname, "--netns", b.netns]):      # no fault there: says so
        assert not _imported_by(*args) & HEAVY, args
    rec = faultinj.apply("drop=0", lab.a.ifname, netns_name=lab.a.netns)
    try:
        mods = _imported_by("set", "drop=0.5", lab.a.ifname, "--netns", lab.a.netns)
        assert "faultinj" in mods and not mods & HEAVY, mods & HEAVY
        assert faultinj.status()[0].record.spec == "drop=0.5@tc-egress"   # the set did happen
    finally:
        faultinj.clear(fault_id=rec.id)


def test_status_and_clear_of_a_tcx_fault_load_no_netlink_library_nor_the_catalogue(lab, kernel_features):
    """A fault on a tcx link has no tc filter before it (tcx runs first), so neither `status` nor
    `apply` dumps the hook's filters through pyroute2 (~100 ms of imports); `status` and `clear`
    read files and maps and never load the fault catalogue either."""
    import faultinj

    if not kernel_features["tcx links"]:
        pytest.skip("this kernel has no tcx links: a tc filter's hook is dumped to find filters before it")
    a = lab.a
    rec = faultinj.apply("drop=0", a.ifname, netns_name=a.netns)
    cleared = False
    try:
        assert rec.attach_kind == "tcx-link" and rec.tc_prio is None, rec
        mods = _imported_by("status", "--netns", a.netns)
        assert "faultinj" in mods and not mods & HEAVY, mods & HEAVY
        import subprocess
        import sys

        probe = _IMPORTS_OF.replace('{m.split(".")[0] for m in sys.modules}', 'sys.modules')
        for args in (["status", "--netns", a.netns], ["clear", a.ifname, "--netns", a.netns]):
            r = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd="/")
            loaded = set(r.stderr.strip().splitlines()[-1].split())
            assert "faultinj.faultstatus" in loaded or "faultinj.removal" in loaded, r.stderr
            assert "faultinj.faults" not in loaded and "pyroute2" not in loaded, (args, r.stderr[-300:])
        cleared = True
        assert faultinj.status(fault_id=rec.id) == []   # the clear above did happen
    finally:
        if not cleared:
            faultinj.clear(fault_id=rec.id)


def test_the_custom_programs_name_is_the_catalogues():
    from faultinj.faults import PROGRAM
    from faultinj.inject.state import CUSTOM_PROGRAM

    assert PROGRAM.name == CUSTOM_PROGRAM


@pytest.mark.parametrize("text", ["drop=25%", "psh-ratio=10,proto=tcp,dport=1024-2047@tc-ingress", "ttl=-1@xdp",
                                  "corrupt=0.1,csum=bad,bits=3", "delay=20ms,jitter=5ms", "burst-loss=1%/30%",
                                  "tcp-flags=+syn-ack,mark=0x10/0xff", "rate=10mbit", "truncate=100@xdp"])
def test_a_records_parts_are_its_specs_and_a_record_with_them_stored_reads_the_same(text):
    """A record keeps its spec alone; fault, value, filters and hook are read from it (typed as the
    catalogue's parser gives them, without loading it), and --json still shows them. A record an
    earlier faultinj wrote (the parts stored beside the spec) reads the same."""
    from faultinj.faults import parse_spec
    from faultinj.inject.state import Record, compose

    fs = parse_spec(text)
    rec = Record(id="f1", spec=compose(fs.name, fs.value, fs.match.words, fs.hook), netns=None, ifname="v0",
                 ifindex=2, attach_mode="", prog_id=1, pin_dir="/x", seed=3, attach_kind="tcx-link")
    words = [list(w) for w in fs.match.words]
    assert (rec.fault, rec.value, rec.match, rec.hook) == (fs.name, fs.value, words, fs.hook)
    assert type(rec.value) is type(fs.value)
    assert parse_spec(rec.spec) == fs
    d = json.loads(json.dumps(rec.to_json()))
    assert (d["fault"], d["value"], d["match"], d["hook"], d["spec"]) == (fs.name, fs.value, words, fs.hook, rec.spec)
    assert Record.from_json(d) == rec
    old = {k: v for k, v in d.items() if k != "spec"}   # the parts alone: the spec is made of them
    assert Record.from_json(old) == rec


def test_a_custom_programs_path_is_its_value_commas_and_all():
    from faultinj.inject.state import CUSTOM_PROGRAM, Record, compose

    spec = compose(CUSTOM_PROGRAM, "/tmp/a,b@c/x=1.bpf.c:fn", [], "xdp")
    rec = Record(id="f1", spec=spec, netns=None, ifname="v0", ifindex=2, attach_mode="", prog_id=1, pin_dir="/x",
                 seed=0)
    assert (rec.fault, rec.value, rec.match, rec.hook, rec.custom) == (
        CUSTOM_PROGRAM, "/tmp/a,b@c/x=1.bpf.c:fn", [], "xdp", True)


@pytest.mark.parametrize("args", [["status", "--help"], ["--traceback", "faults"], ["lab", "--help"], ["lab", "up", "--help"],
                                  ["nosuch"], ["apply", "drop=1", "x0", "--no-such-flag", "--json"]])
def test_the_command_built_alone_answers_as_the_whole_app(args):
    """main() builds only the command argv names (typer's start-up cost per command); what it prints
    and its exit code are the whole app's."""
    import subprocess
    import sys

    from faultinj.cli import _only_the_command_asked

    from faultinj.cli import app

    whole = runner.invoke(app, args, prog_name="faultinj")
    one = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'faultinj'; "
                          "from faultinj.cli import main; main()", *args], capture_output=True, text=True,
                         env={**__import__("os").environ, "COLUMNS": "80"})
    assert (one.returncode, one.stdout) == (whole.exit_code, whole.stdout)
    assert one.stderr == whole.stderr
    built = _only_the_command_asked(args)
    named = [a for a in args if not a.startswith("-")]
    every = len(app.registered_commands) + len(app.registered_groups)
    assert len(built.registered_commands) + len(built.registered_groups) == (
        1 if named and named[0] != "nosuch" else every)


def test_version():
    from importlib.metadata import version

    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"faultinj {version('faultinj')}"


@pytest.mark.parametrize("args,code", [
    (("clear", "--json"), ExitStatus.USAGE),
    (("clear", "--id", "fdeadbeef", "--json"), ExitStatus.STATE),
    (("apply", "drop=150%", "x0", "--json"), ExitStatus.USAGE),
    (("apply", "drop=1", "x0", "--no-such-flag", "--json"), ExitStatus.USAGE),
])
def test_json_errors_are_json(args, code):
    r = invoke(*args)
    assert r.exit_code == code
    err = json.loads(r.stdout)
    assert err["exit_code"] == code and err["error"] and "\n" not in err["error"]


def _through_the_boundary(fn):
    """A command body run behind the CLI's one error boundary, as every command is."""
    from faultinj.cli import _boundary

    import typer

    def body(as_json: bool = False):
        fn()

    one = typer.Typer()
    one.command()(_boundary(body))
    return runner.invoke(one, [])


def test_a_netlink_error_is_one_line_with_its_exit_code():
    """A real netlink refusal (no interface with index 0x7ffffff0), not a traceback."""
    from pyroute2 import IPRoute

    def ask():
        with IPRoute() as ipr:
            ipr.link("get", index=0x7FFFFFF0)

    r = _through_the_boundary(ask)
    assert r.exit_code == ExitStatus.USAGE, r.output
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("faultinj: error: the kernel refused a netlink request: ENODEV")


def test_a_subprocess_timeout_is_one_line():
    import subprocess

    r = _through_the_boundary(lambda: subprocess.run(["sleep", "5"], timeout=0.05))
    assert r.exit_code == ExitStatus.FAILED, r.output
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("faultinj: error: 'sleep 5' did not finish within ") and line.count("\n") == 0


def test_capture_direction_is_checked_by_the_library():
    from faultinj.errors import SpecError
    from faultinj.labs.capture import Capture

    with pytest.raises(SpecError, match="unknown direction 'sideways'"):
        Capture(None, "lo", direction="sideways")
