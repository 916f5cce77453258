"""The HTML report: its plot data (pure), the page (self-contained), and the page in a real
headless Chromium: loads with no console errors, the expected plots present, a screenshot saved
under the run's output dir (and in $FAULTINJ_ARTIFACTS when CI sets it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import browser
from faultinj.labs.traffic import UdpResult
from faultinj.packets import Packet
from faultinj.scenario.expect import RunData
from faultinj.scenario.plots import bursts, plot_for
from faultinj.scenario.runner import Report
from faultinj.scenario.schema import ExpectEntry
from faultinj.verdict import Check

ROOT = Path(__file__).resolve().parent.parent
needs_chromium = pytest.mark.skipif(browser.find() is None, reason="chromium not installed (run.sh installs it)")


def _pkt(**kw) -> Packet:
    p = Packet.__new__(Packet)
    for f in Packet.__dataclass_fields__:
        setattr(p, f, None)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def test_plot_data_histogram_ratio_and_bursts():
    ttl = [_pkt(version=4, proto=1, icmp_type=0, ttl=t % 64 + 1, payload_len=56) for t in range(640)]
    data = RunData(packets={"rx": ttl}, times={"rx": [i * 0.001 for i in range(640)]})
    h = plot_for(ExpectEntry("uniform", {"capture": "rx", "of": "echo_reply", "field": "ttl", "range": [1, 64]}, 1),
                 data)
    assert h["kind"] == "histogram" and h["counts"] == [10] * 64 and h["outside"] == 0

    # loss: datagrams 3, 4, 5 and 9 lost of 20: bursts of 3 and 1
    data = RunData(traffic={"s": UdpResult(20, set(range(20)) - {3, 4, 5, 9}, 1.0)})
    loss = plot_for(ExpectEntry("loss", {"traffic": "s", "p": 0.1}, 1), data)
    assert loss["kind"] == "loss" and loss["bursts"] == [1, 0, 1] and loss["k"] == 4 and loss["n"] == 20
    assert loss["ratio"][-1] == 0.2 and loss["lo"][-1] < 0.2 < loss["hi"][-1]
    assert bursts([1, 2, 3, 7, 9, 10]) == [3, 1, 2]

    data = RunData(counters={"f": {"matched": 1000, "acted": 100}})
    point = plot_for(ExpectEntry("fault_ratio", {"fault": "f", "ratio": 10}, 1), data)
    assert point["kind"] == "ratio_point" and point["lo"] < 0.1 < point["hi"]
    assert plot_for(ExpectEntry("exit_code", {"traffic": "s"}, 1), data) is None


def test_long_ratio_curves_are_thinned():
    pkts = [_pkt(version=4, proto=6, tcp_flags=0x18 if i % 10 == 0 else 0x10, payload_len=100) for i in range(5000)]
    data = RunData(packets={"rx": pkts}, times={"rx": [i * 0.01 for i in range(5000)]})
    c = plot_for(ExpectEntry("fraction", {"capture": "rx", "of": "tcp and data", "having": "psh", "ratio": 10}, 1),
                 data)
    assert c["kind"] == "ratio" and len(c["x"]) == 200 and c["x"][-1] == pytest.approx(49.99)
    assert c["k"] == 500 and c["n"] == 5000 and c["ratio"][-1] == 0.1


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href", "xlink:href", "action", "data", "poster") and v:
                self.refs.append((tag, k, v))
        if tag == "link":
            self.refs.append((tag, "link", dict(attrs).get("href", "")))


def _sample_report() -> Report:
    r = Report("sample", "sample.yaml", prefix="fi000")
    r.checks = [Check("uniform: ttl", True, "n=640", "p > 0.001"), Check("loss of s", False, "4/20 = 0.2", "0.1", (0.05, 0.5)),
                Check("tcp_intact: t", True, "100 bytes", "100 bytes")]
    r.plots = {0: {"kind": "histogram", "field": "ttl", "range": [1, 4], "n": 40, "counts": [9, 11, 10, 10],
                   "outside": 0, "confidence": 0.999},
               1: {"kind": "loss", "what": "loss", "xlabel": "datagram", "x": [1, 2], "ratio": [0, 0.5], "lo": [0, 0.1],
                   "hi": [0.8, 0.9], "p": 0.1, "confidence": 0.999, "k": 1, "n": 2, "bursts": [1],
                   "bursts_expected": [0.9]}}
    r.journeys = [[{"ts_ns": 1000, "netns_name": "fi000-vm1", "ifname": "eth0", "direction": "out", "reason": "",
                    "summary": "request #1"},
                   {"ts_ns": 9000, "netns_name": "fi000-vm2", "ifname": "eth0", "direction": "DROP",
                    "reason": "NO_SOCKET", "summary": "request #1"}]]
    r.ovs = {"br0": {"bridge": "fi000br0", "protocols": ["OpenFlow13"],
                     "table": [{"table": 0, "n_packets": 5, "n_bytes": 500, "rule": "priority=0 actions=NORMAL"}],
                     "megaflows": [{"packets": 5, "bytes": 500, "flow": "in_port(2),eth_type(0x0800) actions:3"}]}}
    return r


def test_the_page_is_self_contained():
    from faultinj.scenario import html

    page = html.render([_sample_report()])
    refs = _Refs()
    refs.feed(page)
    outside = [r for r in refs.refs if not r[2].startswith(("#", "data:"))]
    assert not outside, outside           # nothing to fetch: no scripts, styles, fonts or images from elsewhere
    assert page.count('<figure class="plot"') == 3 and page.count("<svg") == 3
    assert 'data-plot="histogram"' in page and 'data-plot="loss"' in page and 'data-plot="journeys"' in page
    assert "priority=0 actions=NORMAL" in page and "NO_SOCKET" in page and "FAIL" in page
    assert "<text" not in page and "@font-face" not in page   # letters drawn as paths: no font to load
    assert all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", page))   # clip paths of the page itself


def test_commands_without_a_report_do_not_import_matplotlib():
    code = ("import sys; from typer.testing import CliRunner; from faultinj.cli import app; "
            "import faultinj.scenario.runner; r = CliRunner().invoke(app, ['faults']); assert r.exit_code == 0; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@needs_chromium
def test_the_browser_check_catches_a_broken_page(tmp_path):
    """The check proves itself: a page with a console error, an exception and a resource from the
    network is caught on all three counts."""
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><html><body><img src="https://cdn.example.com/a.png">'
                    '<script>console.error("boom"); missing();</script></body></html>')
    r = browser.open_page(str(page))
    text = "\n".join(r.errors)
    assert "boom" in text and "missing is not defined" in text and "ERR_NAME_NOT_RESOLVED" in text, text


def _save_artifact(path: Path) -> None:
    where = os.environ.get("FAULTINJ_ARTIFACTS")
    if where:
        os.makedirs(where, exist_ok=True)
        shutil.copy(path, os.path.join(where, path.name))


@needs_chromium
def test_report_of_a_real_run_in_headless_chromium(tmp_path):
    out = tmp_path / "run"
    report = out / "report.html"
    r = subprocess.run([sys.executable, "-m", "faultinj.cli", "run", str(ROOT / "scenarios" / "report-tour.yaml"),
                        "--pcap-dir", str(out), "--report", str(report)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"report: {report}" in r.stderr
    shown = report.read_text()   # a page shared (docs/report.png) shows no path of the machine it was made on
    assert str(ROOT) not in shown and str(tmp_path) not in shown and "scenarios/report-tour.yaml" in shown
    page = browser.open_page(str(report), {
        "plots": "Array.from(document.querySelectorAll('figure.plot')).map(f => f.dataset.plot)",
        "drawn": "Array.from(document.querySelectorAll('figure.plot svg')).filter(s => s.getBBox().width > 100).length",
        "verdicts": "document.querySelectorAll('tr.check').length",
        "failed": "document.querySelectorAll('tr.check.bad').length",
    })
    shot = out / "report.png"
    shot.write_bytes(page.screenshot)
    _save_artifact(shot)
    _save_artifact(report)
    assert page.errors == [], page.errors
    assert page.values["plots"] == ["histogram", "ratio_point", "ratio", "loss", "ratio_point", "journeys"]
    assert page.values["drawn"] == 6 and page.values["verdicts"] == 7 and page.values["failed"] == 0
    from PIL import Image   # matplotlib's own dependency

    img = Image.open(shot)
    assert img.width >= 1100 and img.height > 2000
    colours = img.convert("RGB").resize((120, 240)).getcolors(maxcolors=1 << 16)
    assert colours and len(colours) > 50   # drawn, not a blank page


def test_without_matplotlib_report_says_what_to_install_before_any_lab(monkeypatch, tmp_path):
    from conftest import cli_runner

    from faultinj.cli import app
    from faultinj.errors import ExitStatus

    monkeypatch.setitem(sys.modules, "matplotlib", None)   # as if not installed
    r = cli_runner().invoke(app, ["run", str(ROOT / "scenarios" / "drop.yaml"), "--report", str(tmp_path / "r.html")])
    assert r.exit_code == ExitStatus.ENVIRONMENT
    assert "faultinj[report]" in r.stderr and "[drop] lab up" not in r.stderr
    assert not (tmp_path / "r.html").exists()


def test_journey_boxes_name_the_ovs_datapath_step():
    """An OVS kernel-datapath hop says which step (upcall, exec output:3), not just 'ovs' (issue 25 #6)."""
    from faultinj.scenario.html import _hop_label

    hop = {"ts_ns": 1, "netns_name": "guest fi1-lab", "ifname": "ovs-system", "direction": "ovs", "reason": ""}
    assert _hop_label({**hop, "point": "upcall"}).splitlines()[-1] == "upcall"
    assert _hop_label({**hop, "point": "exec output:3"}).splitlines()[-1] == "exec output:3"
    assert _hop_label({**hop, "direction": "in", "point": "netif_receive_skb"}).splitlines()[-1] == "in"
