"""The expectation kinds live in one registry (faultinj/scenario/expectations.py): each kind is one
class owning its keys and their meanings, its checks of a file, its evaluation and its plot. The
schema, the evaluation, the plots, the reference and the runner look a kind up and name none: a new
kind is one class. Pure: no root, milliseconds."""

from __future__ import annotations

import ast
from pathlib import Path

from faultinj.scenario import expectations, reference
from faultinj.scenario.expect import RunData, evaluate
from faultinj.scenario.expectations import KINDS, Expectation
from faultinj.scenario.plots import plot_for
from faultinj.scenario.schema import ScenarioError, loads
from faultinj.verdict import Check

import pytest

SCENARIO = Path(expectations.__file__).parent
# the modules that must not tell one kind from another (html.py draws by a plot's kind, not by an
# expectation's: a histogram, a ratio curve, ...)
LOOK_UP_ONLY = ("schema.py", "expect.py", "plots.py", "reference.py", "runner.py")


def kind_branches(path: Path, kinds) -> list[str]:
    """Where a module names an expectation kind in a comparison (kind == "loss", kind in (...)), as
    the keys of a dict (a table per kind) or in a match statement's cases: file:line: the names."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
        elif isinstance(node, ast.Dict):   # a table per kind (one kind's name may be another's key: count)
            parts = [k for k in node.keys if k is not None]
            if len({k.value for k in parts if isinstance(k, ast.Constant) and k.value in kinds}) < 2:
                continue
        elif isinstance(node, ast.Match):
            parts = [c.pattern for c in node.cases]
        else:
            continue
        keys = {id(c.slice) for p in parts for c in ast.walk(p) if isinstance(c, ast.Subscript)}   # prm["count"]
        named = sorted({c.value for p in parts for c in ast.walk(p) if isinstance(c, ast.Constant)
                        and isinstance(c.value, str) and c.value in kinds and id(c) not in keys}
                       | {c.value.value for p in parts for c in ast.walk(p) if isinstance(c, ast.MatchValue)
                          and isinstance(c.value, ast.Constant) and c.value.value in kinds})
        if named:
            out.append((node.lineno, f"{path.name}:{node.lineno}: {', '.join(named)}"))
    return [said for _, said in sorted(out)]


def test_no_module_but_the_registry_branches_on_a_kind():
    assert len(KINDS) >= 22
    assert [b for name in LOOK_UP_ONLY for b in kind_branches(SCENARIO / name, KINDS)] == []


def test_the_branch_check_sees_a_branch_and_a_table(tmp_path):
    path = tmp_path / "branchy.py"
    path.write_text('def f(e, k):\n    if e.kind == "loss" or e.params["count"] > 1: pass\n    if k in ("fraction", "count"): pass\n'
                    '    T = {"delay": 1, "count": 2}\n    U = {"count": 1}\n    match k:\n        case "uniform": pass\n    return "loss"\n')
    assert kind_branches(path, KINDS) == ["branchy.py:2: loss", "branchy.py:3: count, fraction",
                                          "branchy.py:4: count, delay", "branchy.py:6: uniform"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_owns_its_schema_evaluation_plot_and_description(kind):
    x = KINDS[kind]
    cls = type(x)
    assert isinstance(x, Expectation) and x.kind == kind
    assert x.what.strip() and x.keys and all(said.strip() for said in x.keys.values())
    assert set(x.required) <= set(x.keys) and x.optional == set(x.keys) - set(x.required)
    assert cls.evaluate is not Expectation.evaluate, f"{kind} does not evaluate"
    assert callable(x.plot) and callable(x.validate)
    assert {k for k, _ in x.refers} <= {k for k, _ in expectations.REFERS}
    assert set(x.journals) <= set(x.keys)
    assert f"### `{kind}`" in reference.render()


def test_a_new_kind_is_one_class(monkeypatch):
    """A class defined here (and nowhere else) is taken by the schema with its own checks, judged,
    drawn and described."""
    monkeypatch.setitem(KINDS, "tally", None)   # removed again after the test

    class Tally(Expectation):
        kind = "tally"
        what = "how many packets a capture has, at least"
        keys = {"capture": "the capture", "least": "at least this many"}
        required = frozenset({"capture", "least"})

        def validate(self, ctx, prm, entries, mark):
            super().validate(ctx, prm, entries, mark)
            ctx.whole(prm, "least", self.kind, 0, 0, 10)

        def evaluate(self, prm, data):
            n = len(data.packets.get(prm["capture"], []))
            return Check(f"tally at {prm['capture']}", n >= prm["least"], str(n), f">= {prm['least']}")

        def plot(self, prm, data):
            return {"kind": "histogram", "n": len(data.packets.get(prm["capture"], []))}

    text = ("name: t\nlab: {hosts: [a, b], links: [{ends: [a, b], a: {ipv4: 10.9.0.1/24}, b: {ipv4: 10.9.0.2/24}}]}\n"
            "capture: [{name: rx, host: b, interface: eth0}]\nexpect:\n  - tally: {capture: rx, least: %s}\n")
    e = loads(text % 2, "t.yaml").expect[0]
    data = RunData(packets={"rx": [object()] * 3})
    assert evaluate(e, data) == Check("tally at rx", True, "3", ">= 2")
    assert plot_for(e, data) == {"kind": "histogram", "n": 3}
    assert "### `tally`" in reference.render() and reference.undocumented() == []
    with pytest.raises(ScenarioError) as exc:
        loads(text % 11, "t.yaml")
    assert exc.value.all_lines == ["t.yaml:5:33: tally.least must be 0..10"]
    with pytest.raises(ScenarioError) as exc:
        loads(text.replace("capture: rx, ", "capture: tx, ") % 1, "t.yaml")
    assert exc.value.all_lines == ["t.yaml:5:22: tally.capture: no capture 'tx' (did you mean 'rx'?)"]


def test_a_kind_must_describe_the_keys_it_requires(monkeypatch):
    monkeypatch.setitem(KINDS, "broken", None)
    with pytest.raises(TypeError, match="broken"):
        class Broken(Expectation):
            kind = "broken"
            what = "x"
            keys = {"capture": "the capture"}
            required = frozenset({"capture", "fault"})
