"""One Host protocol (faultinj/scenario/hosts.py): each verb written once, done by a namespace host
here and sent by the agent's client to an agent, whose server (faultinj/guest/server.py) answers
it with a namespace host of its own. The first test reads the code (no root, milliseconds); the
second drives every verb through a real agent in a lab namespace, on real traffic (~2.5 s)."""

from __future__ import annotations

import ast
import inspect
import json
import sys
import threading
from pathlib import Path

import pytest

from faultinj.errors import FaultinjError, StateError
from faultinj.guest import server
from faultinj.labs.capture import Frame
from faultinj.labs.traffic import PingResult
from faultinj.journal import Event
from faultinj.scenario import hosts
from faultinj.scenario.hosts import VERBS, AgentHost, Captured, Completed, Host, NamespaceHost, TargetHost

EVENT = Event("f1", "drop=1", "ns/eth0", "egress", 5, 2, 0x800, 6, "10.0.0.1", "10.0.0.2", 1, 2, 3, 4, "drop", 0, 1)
# each verb: its arguments and what the host answers (every verb needs an entry)
SAMPLES = {
    "apply": (("psh-ratio=10", "eth0"), {"seed": 7, "duration": "2s"}, {"id": "f1", "spec": "psh-ratio=10"}),
    "status": ((), {"fault_id": "f1"}, [{"id": "f1", "counters": {"acted": 3}}]),
    "set_fault": ((None, "psh-ratio=5"), {"fault_id": "f1"}, {"id": "f1", "spec": "psh-ratio=5"}),
    "clear": (("f1",), {}, None),
    "journal": (("f1",), {}, [EVENT]),
    "journal_close": (("f1",), {}, []),
    "capture_start": (("eth0",), {"direction": "in"}, object()),
    "capture_stop": ((0,), {"settle": 0}, Captured([Frame(1, True, 60, b"\x00\xff" * 30)], 2)),
    "tcp_listen": (("10.0.0.2", 5201), {}, object()),
    "tcp_result": ((0,), {}, {"received": 10, "sha256": "ab", "error": None}),
    "tcp_send": (("10.0.0.2", 10, 5201), {"seed": 3}, {"sent": 10, "sha256": "ab", "seconds": 0.5, "error": None}),
    "ping": (("10.0.0.2", 3, 0.01, 56, 1.0), {}, PingResult(0, 3, 3, "3 received")),
    "exec": ((["true"],), {"cwd": "/"}, Completed(["true"], 0, "out", "")),
    "csum_errors": ((), {}, 4),
    "kernel_counters": ((), {}, {"Tcp.OutSegs": 9}),
}


class _Recorder(NamespaceHost):
    """The server's host, answering SAMPLES and noting what each verb was given."""

    def __init__(self):
        super().__init__("rec", None)
        self.got: dict[str, dict] = {}

    def __getattribute__(self, name):
        if name in VERBS:
            def verb(**kwargs):
                self.got[name] = kwargs
                return SAMPLES[name][2]
            return verb
        return super().__getattribute__(name)


class _Wire:
    """An agent's transport in memory: each call crosses as JSON into a server's answer."""

    def __init__(self, srv):
        self.srv, self.info = srv, {"release": "6.1.0-test"}

    def call(self, method, _timeout=None, **params):
        return json.loads(json.dumps(self.srv.answer(method, json.loads(json.dumps(params)))))


def _defined_in(path: Path, cls: str | None) -> set[str]:
    """The functions a module (or one class in it) defines by hand."""
    tree = ast.parse(path.read_text())
    scopes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls] if cls else [tree]
    return {n.name for s in scopes for n in ast.walk(s) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_each_host_verb_is_written_once_and_crosses_the_wire_by_its_annotations():
    """Issue 22: the verbs live in Host only. The namespace host implements each with Host's very
    signature (the wire passes parameters by name); the agent's client and server write none by
    hand: both are made from Host's annotations, so a verb added to Host is served and sent with
    nothing else written. Every verb crosses an in-memory wire with its arguments intact and comes
    back as the type Host says. Cost: milliseconds."""
    assert set(VERBS) == set(SAMPLES), "a verb of Host needs its sample here"
    assert set(VERBS) == {n for n, f in vars(Host).items() if getattr(f, "__isabstractmethod__", False)} - {"close"}
    for verb in VERBS:
        want = inspect.signature(getattr(Host, verb))
        for cls in (NamespaceHost, TargetHost):
            assert inspect.signature(getattr(cls, verb)) == want, f"{cls.__name__}.{verb} differs from Host.{verb}"
        sent = getattr(AgentHost, verb)
        assert getattr(sent, "verb", None) == verb and sent.__wrapped__ is getattr(Host, verb), \
            f"AgentHost.{verb} is written by hand"
    # nor by hand in the sources (a method named as a verb in the client's class or in the server)
    assert not set(VERBS) & _defined_in(Path(hosts.__file__), "AgentHost")
    assert not set(VERBS) & _defined_in(Path(server.__file__), None)

    samples = dict(SAMPLES)   # a handle's number is known once its verb answered
    srv = server._Server()
    srv.host = _Recorder()
    client = AgentHost("vm", _Wire(srv))
    assert client.kernel == "6.1.0-test"
    for verb in VERBS:
        args, kwargs, answer = samples[verb]
        got = getattr(client, verb)(*args, **kwargs)
        sig = inspect.signature(getattr(Host, verb))
        bound = sig.bind(None, *args, **kwargs)
        bound.apply_defaults()
        given = dict(list(bound.arguments.items())[1:])
        if verb in ("capture_stop", "tcp_result"):   # the handle's object, as its verb made it
            given["handle"] = samples[{"capture_stop": "capture_start", "tcp_result": "tcp_listen"}[verb]][2]
        assert srv.host.got[verb] == given, verb
        if sig.return_annotation == "Handle":
            assert isinstance(got, int) and got in srv._handles, verb   # a number standing for it
            if verb == "capture_start":
                samples["capture_stop"] = ((got,), *samples["capture_stop"][1:])
            else:
                samples["tcp_result"] = ((got,), *samples["tcp_result"][1:])
        else:
            assert type(got) is type(answer) and got == answer, verb
    assert not srv._handles   # each handle is given back once
    with pytest.raises(FaultinjError, match="unknown agent method 'close'"):
        srv.answer("close", {})


def test_every_verb_through_a_real_agent_as_on_a_namespace_host(lab, private_state):
    """An agent (`python -m faultinj.guest.server --stdio`) in host a's namespace, driven through
    AgentHost; host b a NamespaceHost here. Every verb of Host is called through the agent, on
    real traffic, and answers with the type a namespace host gives. Cost: ~2.5 s."""
    from faultinj.guest.agent import Agent

    agent = Agent.process(["ip", "netns", "exec", lab.a.netns, sys.executable, "-m", "faultinj.guest.server",
                           "--stdio"], "agent in a", timeout=60)
    a, b = AgentHost("a", agent), NamespaceHost("b", lab.b.netns)
    called = set()
    for verb in VERBS:
        def note(*args, _verb=verb, _f=getattr(a, verb), **kwargs):
            called.add(_verb)
            return _f(*args, **kwargs)
        setattr(a, verb, note)
    try:
        rec = a.apply("psh-ratio=1", lab.a.ifname, seed=3)
        assert rec["spec"].startswith("psh-ratio=1@") and rec["netns"] is None   # the agent's own namespace
        [st] = [s for s in a.status(rec["id"])]
        assert st["id"] == rec["id"]
        assert a.set_fault(None, "psh-ratio=2", fault_id=rec["id"])["spec"].startswith("psh-ratio=2@")
        cap_a, cap_b = a.capture_start(lab.a.ifname, 128, "out"), b.capture_start(lab.b.ifname, 128, "in")
        rx = b.tcp_listen(lab.b.ip4, 5301)
        sent = a.tcp_send(lab.b.ip4, 300_000, 5301, seed=5)
        got = b.tcp_result(rx)
        assert sent["error"] is None and got["received"] == 300_000 and got["sha256"] == sent["sha256"]
        rx = a.tcp_listen(lab.a.ip4, 5302)
        sent = b.tcp_send(lab.a.ip4, 100_000, 5302, seed=6)
        got = a.tcp_result(rx)
        assert got["received"] == 100_000 and got["sha256"] == sent["sha256"]
        pinged = a.ping(lab.b.ip4, 5, 0.01, 56, 2.0)
        assert type(pinged) is type(b.ping(lab.a.ip4, 1, 0.01, 56, 2.0)) is PingResult and pinged.received == 5
        out_a, out_b = a.capture_stop(cap_a), b.capture_stop(cap_b)
        assert type(out_a) is type(out_b) is Captured and isinstance(out_a.frames[0], Frame)
        # every segment a sent is on b's wire, byte for byte (the frames crossed as JSON)
        sent_data = {f.data for f in out_a.frames if len(f.data) > 54 and f.data[23] == 6}
        assert sent_data and sent_data <= {f.data for f in out_b.frames}
        events = a.journal(rec["id"])
        assert events and all(type(e) is Event and e.action for e in events)
        ran = a.exec(["ip", "-o", "link", "show", lab.a.ifname])
        assert type(ran) is Completed and ran.returncode == 0 and lab.a.ifname in ran.stdout   # in a's namespace
        with pytest.raises(FaultinjError, match="failed"):
            a.exec(["ip", "link", "show", "nosuchlink0"], check=True)
        assert a.csum_errors() == b.csum_errors() == 0
        counters = a.kernel_counters()
        tcp = lambda c: {k for k in c if k.startswith("Tcp")}   # noqa: E731 (ICMPv6 types come as they are sent)
        assert tcp(counters) == tcp(b.kernel_counters()) and counters["Tcp.OutSegs"] > 0
        removed = a.clear(rec["id"])
        assert removed["id"] == rec["id"] and removed["final_counters"]["acted"] > 0
        with pytest.raises(FaultinjError, match="no fault with id") as gone:   # an error crosses as itself
            a.clear(rec["id"])
        assert gone.value.status == StateError.status   # its exit code too
        assert all(type(e) is Event for e in a.journal_close(rec["id"]))
    finally:
        agent.close()
    assert called == set(VERBS)


def test_an_agent_of_another_protocol_is_refused_in_one_line():
    """An ssh host's faultinj of another version (its hello names another protocol, or none, as
    before this one): refused when it connects, saying what to do (exit 3), not a verb failing
    later. The agent here is a few lines answering as an older faultinj did. Cost: ~0.1 s."""
    from faultinj.errors import EnvironmentProblem, ExitStatus
    from faultinj.guest.agent import Agent

    older = ('import json, sys\n'
             'print(json.dumps({"id": 0, "result": "ready"}), flush=True)\n'
             'for line in sys.stdin:\n'
             '    req = json.loads(line)\n'
             '    print(json.dumps({"id": req["id"], "result": {"release": "6.1.0", "version": "0.9.0",'
             ' "pid": 1, "links": []}}), flush=True)\n')
    with pytest.raises(EnvironmentProblem) as exc:
        Agent.process([sys.executable, "-c", older], "host m1 (root@m1)", timeout=30)
    assert str(exc.value).startswith("host m1 (root@m1): its faultinj (0.9.0) speaks another agent protocol")
    assert "install the same version there" in str(exc.value) and "\n" not in str(exc.value)
    assert exc.value.status == ExitStatus.ENVIRONMENT


def test_an_agent_that_writes_much_on_stderr_keeps_answering():
    """The agent logs each request on stderr; unread, the pipe (64 KiB) filled after a few thousand
    requests and the agent stopped mid-answer, for good. Here an agent writing 8 KiB per request
    answers 40 (before the fix: stuck at the 8th), and when it goes away its last stderr line is
    what the error says. Cost: ~0.3 s."""
    from faultinj.errors import EnvironmentProblem
    from faultinj.guest.agent import PROTOCOL, Agent

    chatty = ('import json, sys\n'
              'print(json.dumps({"id": 0, "result": "ready"}), flush=True)\n'
              'for line in sys.stdin:\n'
              '    req = json.loads(line)\n'
              '    sys.stderr.write("x" * 8191 + "\\n"); sys.stderr.flush()\n'
              '    if req["method"] == "bye":\n'
              '        sys.stderr.write("the agent ran out of luck\\n"); sys.exit(3)\n'
              f'    print(json.dumps({{"id": req["id"], "result": {{"release": "6.1.0", "protocol": {PROTOCOL}}}}}), flush=True)\n')
    agent = Agent.process([sys.executable, "-c", chatty], "host m1", timeout=30)
    answered = []

    def ask():
        for _ in range(40):
            answered.append(agent.call("hello"))
    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(30)
    assert len(answered) == 40, f"the agent stopped answering after {len(answered)} requests"
    with pytest.raises(EnvironmentProblem, match="host m1: the agent went away: the agent ran out of luck"):
        agent.call("bye")
    agent.close()
