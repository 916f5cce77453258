"""`faultinj run --report out.html`: one self-contained page (no network needed to open it) with
every expectation's verdict and, where a distribution is the answer, its plot as inline SVG drawn
by matplotlib: a field's histogram against the uniform, a ratio over time with its confidence
band, loss bursts against independent losses, traced journeys as hop diagrams; and each OVS
bridge's rule statistics and megaflows.

matplotlib is imported here only, and only when a report is asked for (the optional extra
faultinj[report]); every other command starts without it."""

from __future__ import annotations

import html
import io
import math
import os
import time
from pathlib import Path

from ..errors import EnvironmentProblem
from ..stats import percent, z_for

PASS_COLOUR, FAIL_COLOUR = "#1a7f37", "#cf222e"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#1f2328;
padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:18px 0 6px}
.badge{display:inline-block;padding:1px 10px;border-radius:12px;color:#fff;font-weight:600}
.pass{background:#1a7f37}.fail{background:#cf222e}
table{border-collapse:collapse;width:100%;margin:6px 0}td,th{border:1px solid #d0d7de;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f6f8fa}
td.v{font-size:16px;text-align:center;width:1.5em}tr.bad td{background:#fff5f5}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
figure{margin:12px 0;border:1px solid #d0d7de;border-radius:6px;padding:8px}
figure svg{max-width:100%;height:auto}figcaption{font-size:13px;color:#57606a}
.meta{color:#57606a}label{user-select:none}
"""

# show only the failed checks (a small convenience; the page works without it)
_JS = """
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("only-failed");
  if (!box) return;
  box.addEventListener("change", function () {
    document.querySelectorAll("tr.check").forEach(function (row) {
      row.style.display = box.checked && !row.classList.contains("bad") ? "none" : "";
    });
  });
  document.body.setAttribute("data-plots", String(document.querySelectorAll("figure.plot svg").length));
});
"""


def require_matplotlib():
    """matplotlib and its Figure, or EnvironmentProblem saying what to install (run --report asks
    before any lab is built)."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise EnvironmentProblem("--report draws its plots with matplotlib: install it "
                                 "(pip install 'faultinj[report]')") from None
    return matplotlib, Figure


class _Svg:
    """Figures rendered as inline SVG, each with its own id salt (several SVGs share one page)."""

    def __init__(self):
        self.matplotlib, self.Figure = require_matplotlib()
        self.n = 0

    def figure(self, width=7.5, height=3.2, **kw):
        return self.Figure(figsize=(width, height), layout="constrained", **kw)

    def svg(self, fig) -> str:
        self.n += 1
        buf = io.StringIO()
        with self.matplotlib.rc_context({"svg.hashsalt": f"faultinj-{self.n}", "svg.fonttype": "path"}):
            fig.savefig(buf, format="svg", metadata={"Date": None})
        text = buf.getvalue()
        return text[text.index("<svg"):]


def _e(x) -> str:
    return html.escape(str(x), quote=True)


# ---- the plots --------------------------------------------------------------------------------

def _histogram(svg: _Svg, plot: dict, title: str) -> str:
    lo, hi = plot["range"]
    counts = plot["counts"]
    xs = list(range(lo, hi + 1))
    n, bins = sum(counts), len(counts)
    fig = svg.figure()
    ax = fig.add_subplot()
    ax.bar(xs, counts, width=1.0, color="#4c78a8", alpha=0.85, zorder=2, label=f"observed ({plot['n']} packets)")
    if bins and n:
        mean = n / bins
        band = z_for(plot["confidence"]) * (n * (1 / bins) * (1 - 1 / bins)) ** 0.5
        ax.axhline(mean, color="#e45756", lw=1.5, zorder=3, label="uniform")
        ax.axhspan(max(0.0, mean - band), mean + band, color="#e45756", alpha=0.15, zorder=1,
                   label=f"uniform, {percent(plot['confidence'])} band per value")
    ax.set_xlabel(plot["field"])
    ax.set_ylabel("packets")
    ax.set_xlim(lo - 0.5, hi + 0.5)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return svg.svg(fig)


def _ratio_axes(ax, plot: dict, xlabel: str) -> None:
    ax.fill_between(plot["x"], plot["lo"], plot["hi"], color="#4c78a8", alpha=0.2,
                    label=f"{percent(plot['confidence'])} confidence band")
    ax.plot(plot["x"], plot["ratio"], color="#4c78a8", lw=1.5, label=f"observed ({plot['k']}/{plot['n']})")
    ax.axhline(plot["p"], color="#e45756", lw=1.2, ls="--", label=f"expected {plot['p']:.4f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ratio")
    ax.legend(fontsize=8, loc="upper right")


def _ratio(svg: _Svg, plot: dict, title: str) -> str:
    fig = svg.figure()
    ax = fig.add_subplot()
    _ratio_axes(ax, plot, f"{plot['xlabel']} (running ratio)")
    ax.set_title(title, fontsize=10)
    return svg.svg(fig)


def _ratio_point(svg: _Svg, plot: dict, title: str) -> str:
    fig = svg.figure(width=5, height=1.9)
    ax = fig.add_subplot()
    k, n = plot["k"], plot["n"]
    r = k / n if n else 0.0
    ax.errorbar([r], [0], xerr=[[r - plot["lo"]], [plot["hi"] - r]], fmt="o", color="#4c78a8", capsize=6,
                label=f"observed {k}/{n}, {percent(plot['confidence'])} CI")
    ax.axvline(plot["p"], color="#e45756", ls="--", label=f"expected {plot['p']:.4f}")
    ax.set_yticks([])
    ax.set_xlabel("ratio")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return svg.svg(fig)


def _loss(svg: _Svg, plot: dict, title: str) -> str:
    fig = svg.figure(height=3.4)
    a1, a2 = fig.subplots(1, 2, width_ratios=[3, 2])
    _ratio_axes(a1, plot, "datagrams sent (running loss ratio)")
    a1.set_title(title, fontsize=10)
    lengths = list(range(1, len(plot["bursts"]) + 1))
    a2.bar(lengths, plot["bursts"], color="#4c78a8", label="observed")
    if lengths:
        a2.plot(lengths, plot["bursts_expected"], "o--", color="#e45756", ms=4, label="independent losses")
    a2.set_xlabel("datagrams lost in a row")
    a2.set_ylabel("bursts")
    a2.set_title("loss bursts", fontsize=10)
    a2.legend(fontsize=8)
    return svg.svg(fig)


_HOP_COLOURS = {"out": "#4c78a8", "in": "#54a24b", "DROP": "#cf222e", "ACT": "#f58518", "DUP": "#f58518",
                "done": "#2da44e", "ovs": "#8250df", "fn": "#6e7781"}


def _hop_label(hop: dict) -> str:
    """Where, then what: an OVS datapath hop says which (upcall, exec output:3), a function its name."""
    what = hop["direction"]
    if what in ("ovs", "fn", "ACT", "DUP") and hop.get("point"):
        what = hop["point"] if what != "ACT" else f"ACT {hop['point']}"
    label = f"{hop['netns_name'].rsplit('-', 1)[-1]}\n{hop['ifname']}\n{what}"[:60]
    if hop.get("reason"):
        label += f"\n{hop['reason']}"[:28]
    return label


def _journeys(svg: _Svg, journeys: list[list[dict]]) -> str:
    rows = len(journeys)
    longest = max(len(j) for j in journeys)
    fig = svg.figure(width=max(6.0, 2.1 * longest), height=0.9 + 1.25 * rows)
    ax = fig.add_subplot()
    for r, journey in enumerate(journeys):
        y = rows - 1 - r
        t0 = journey[0]["ts_ns"]
        for i, hop in enumerate(journey):
            colour = _HOP_COLOURS.get(hop["direction"], "#888888")
            if i:
                ax.annotate("", xy=(i - 0.42, y), xytext=(i - 0.58, y),
                            arrowprops={"arrowstyle": "->", "color": "#57606a"})
            ax.text(i, y, _hop_label(hop), ha="center", va="center", fontsize=9, color="white",
                    bbox={"boxstyle": "round,pad=0.35", "fc": colour, "ec": colour})
            ax.text(i, y - 0.47, f"+{(hop['ts_ns'] - t0) / 1000:.0f} µs", ha="center", fontsize=8.5,
                    color="#57606a")
        ax.text(-0.55, y, f"#{r + 1}", ha="right", va="center", fontsize=10)
    ax.set_xlim(-0.9, longest - 0.4)
    ax.set_ylim(-0.8, rows - 0.3)
    ax.axis("off")
    ax.set_title("journeys: each traced packet's hops, in order (host, interface, direction)", fontsize=10)
    return svg.svg(fig)


def _late_segments(svg: _Svg, plot: dict, title: str) -> str:
    """Each connection's sequence numbers as they arrived (tcptrace's view), late segments in red,
    late segments per connection beside; the late ones named in a table under it."""
    fig = svg.figure(width=9.0, height=3.4)
    a1, a2 = fig.subplots(1, 2, width_ratios=[3, 2])
    for i, c in enumerate(plot["connections"]):
        a1.plot(c["t"], c["seq"], ".", ms=2.5, color="#4c78a8", alpha=0.6,
                label="data segments, in arrival order" if i == 0 else None)
        if c["late"]:
            xs, ys = zip(*c["late"])
            a1.plot(xs, ys, "o", ms=6, mfc="none", color="#cf222e", label="late" if i == 0 else None)
    a1.set_xlabel("ms since the connection's first data segment arrived")
    a1.set_ylabel("sequence (kB from its first byte)")
    a1.set_title(f"{len(plot['connections'])} connections ({plot['what']})", fontsize=9)
    handles, labels = a1.get_legend_handles_labels()
    if handles:
        a1.legend(fontsize=7, loc="lower right")
    per = plot["per_connection"]
    a2.bar(range(1, len(per) + 1), per, color="#cf222e", alpha=0.8)
    a2.set_xlabel("connection (in order of arrival)")
    a2.set_ylabel("late data segments")
    a2.set_title(title[:70], fontsize=8)
    rows = "".join(f"<tr><td>{s['sport']}&gt;{s['dport']}</td><td>+{s['rel_seq']}</td><td>{s['length']}</td>"
                   f"<td>{_e(s['flags'])}</td><td>{s['overtaken_by']}</td><td>{s['late_ms']:.1f}</td>"
                   f"<td>{'yes' if s['first'] else 'no'}</td></tr>" for s in plot["late"])
    table = ("<table class='late'><tr><th>ports</th><th>seq</th><th>length</th><th>flags</th>"
             "<th>overtaken by</th><th>ms late</th><th>first data</th></tr>" + rows + "</table>") if rows else ""
    return svg.svg(fig) + table


def _throughput_ratio(svg: _Svg, plot: dict, title: str) -> str:
    fig = svg.figure(width=7.5, height=3.0)
    ax = fig.add_subplot()
    for y, (what, xs, colour) in enumerate(((plot["control"], plot["controls"], "#54a24b"),
                                            (plot["of"], plot["faulted"], "#cf222e"))):
        ax.plot(xs, [y + (i % 5 - 2) * 0.04 for i in range(len(xs))], "o", color=colour, alpha=0.7,
                label=f"{what}: {len(xs)} connections")
        m = math.exp(sum(math.log(x) for x in xs) / len(xs))
        ax.plot([m, m], [y - 0.25, y + 0.25], color=colour, lw=2)
    ax.set_yticks([0, 1], [plot["control"], plot["of"]], fontsize=8)
    ax.set_ylim(-0.6, 1.6)
    ax.set_xscale("log")
    ax.set_xlabel("Mbit/s per connection (bar: geometric mean)")
    ax.set_title(f"ratio of geometric means {plot['ratio']:.3f}, {percent(plot['confidence'])} interval "
                 f"[{plot['lo']:.3f}, {plot['hi']:.3f}]", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return svg.svg(fig)


_DRAW = {"histogram": _histogram, "ratio": _ratio, "ratio_point": _ratio_point, "loss": _loss,
         "late_segments": _late_segments, "throughput_ratio": _throughput_ratio}


# ---- the page ---------------------------------------------------------------------------------

def _shown(path: str, base: str | None = None) -> str:
    """A path as the report shows it: relative to the report's directory (the captures beside it) or
    to the current one (the scenario file as given), so that a page shared (docs/report.png) shows no
    path of the machine it was made on; else as given."""
    if not path:
        return path
    full = os.path.abspath(path)
    for root in (base, os.getcwd()):
        if root and full.startswith(os.path.join(os.path.abspath(root), "")):
            return os.path.relpath(full, root)
    return path


def _report_section(svg: _Svg, i: int, r, base: str | None = None) -> str:
    ok = r.ok
    out = [f'<section class="scenario" id="s{i}"><h2>{_e(r.scenario)} '
           f'<span class="badge {"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span></h2>',
           f'<p class="meta">{_e(_shown(r.path, base))} · {r.seconds:.1f} s · lab prefix <code>{_e(r.prefix)}</code>'
           + (f' in guest <code>{_e(r.guest)}</code>' if getattr(r, "guest", "") else "") + ' · '
           f'{sum(c.ok for c in r.checks)} of {len(r.checks)} checks passed</p>']
    if r.description:
        out.append(f"<p>{_e(r.description)}</p>")
    out.append('<table class="checks"><tr><th></th><th>check</th><th>observed</th><th>expected</th>'
               '<th>confidence interval</th><th>plot</th></tr>')
    for j, c in enumerate(r.checks):
        ci = f"[{c.ci[0]:.4f}, {c.ci[1]:.4f}]" if c.ci else ""
        link = f'<a href="#plot-{i}-{j}">plot</a>' if j in r.plots and r.plots[j].get("kind") != "error" else ""
        out.append(f'<tr class="check{"" if c.ok else " bad"}"><td class="v" style="color:'
                   f'{PASS_COLOUR if c.ok else FAIL_COLOUR}">{"✓" if c.ok else "✗"}</td><td>{_e(c.name)}</td>'
                   f'<td class="mono">{_e(c.observed)}</td><td>{_e(c.expected)}</td><td class="mono">{ci}</td>'
                   f"<td>{link}</td></tr>")
    out.append("</table>")
    for err in r.errors:
        out.append(f'<p style="color:{FAIL_COLOUR}">error: {_e(err)}</p>')
    for j, p in sorted(r.plots.items()):
        if p.get("kind") == "error":
            out.append(f'<p class="meta">no plot for {_e(r.checks[j].name)}: {_e(p["error"])}</p>')
    plots = [(j, p) for j, p in sorted(r.plots.items()) if p.get("kind") in _DRAW]
    if plots:
        out.append("<h3>distributions</h3>")
    for j, plot in plots:
        c = r.checks[j]
        body = _DRAW[plot["kind"]](svg, plot, c.name)
        out.append(f'<figure class="plot" data-plot="{plot["kind"]}" id="plot-{i}-{j}">{body}'
                   f'<figcaption><b style="color:{PASS_COLOUR if c.ok else FAIL_COLOUR}">'
                   f'{"✓" if c.ok else "✗"}</b> {_e(c.name)}: {_e(c.observed)} (expected {_e(c.expected)})'
                   f"</figcaption></figure>")
    if r.journeys:
        journeys = [[h.to_json() if hasattr(h, "to_json") else h for h in j] for j in r.journeys]
        out.append("<h3>journeys</h3>")
        out.append(f'<figure class="plot" data-plot="journeys" id="journeys-{i}">{_journeys(svg, journeys)}'
                   f"<figcaption>" + "<br>".join(_e(j[0].get("summary", "")) for j in journeys) +
                   "</figcaption></figure>")
    if r.faults:
        out.append("<h3>faults</h3><table><tr><th>fault</th><th>where</th><th>spec</th><th>hook</th>"
                   "<th>seed</th><th>seen</th><th>matched</th><th>acted</th></tr>")
        for name, f in r.faults.items():
            c = r.counters.get(name, {})
            out.append(f"<tr><td>{_e(name)}</td><td>{_e(f['host'])}/{_e(f['interface'])}"
                       f"{' (VM, ' + _e(f['kernel']) + ')' if f.get('vm') else ''}</td><td><code>{_e(f['spec'])}"
                       f"</code></td><td>{_e(f['hook'])} ({_e(f['attach_mode'])})</td><td>{_e(f['seed'])}</td>"
                       + "".join(f"<td>{_e(c.get(k, '?'))}</td>" for k in ("seen", "matched", "acted")) + "</tr>")
        out.append("</table>")
    for name, sw in r.ovs.items():
        out.append(f"<h3>Open vSwitch bridge {_e(name)} <span class='meta'>({_e(sw['bridge'])}"
                   f"{', ' + _e(','.join(sw['protocols'])) if sw.get('protocols') else ''})</span></h3>")
        out.append("<table><tr><th>table</th><th>packets</th><th>bytes</th><th>rule (ovs-ofctl dump-flows)</th></tr>")
        for row in sw["table"]:
            out.append(f"<tr><td>{row['table']}</td><td>{row['n_packets']}</td><td>{row['n_bytes']}</td>"
                       f"<td class='mono'>{_e(row['rule'])}</td></tr>")
        out.append("</table><table><tr><th>packets</th><th>bytes</th><th>megaflow (ovs-appctl dpif/dump-flows)"
                   "</th></tr>")
        for m in sw["megaflows"]:
            out.append(f"<tr><td>{m['packets']}</td><td>{m['bytes']}</td><td class='mono'>{_e(m['flow'])}</td></tr>")
        out.append("</table>")
    if r.pcaps:
        out.append("<h3>captures</h3><ul>" + "".join(f"<li>{_e(n)}: <code>{_e(_shown(p, base))}</code></li>"
                                                     for n, p in r.pcaps.items()) + "</ul>")
    out.append("</section>")
    return "\n".join(out)


def _matrix_section(m) -> str:
    """A scenario across kernels (scenario/matrix.py): its columns side by side, one row per check."""
    rows = m.table()
    out = [f'<section class="scenario matrix"><h2>{_e(m.scenario.name)} across {len(m.cells)} side(s) '
           f'<span class="badge {"pass" if m.ok else "fail"}">{"PASS" if m.ok else "FAIL"}</span></h2>',
           f'<p class="meta">{_e(m.scenario.path)} · {m.repeat} run(s) per side</p><table class="checks">',
           "<tr>" + "".join(f"<th>{_e(c)}</th>" for c in rows[0]) + "</tr>"]
    for row in rows[1:]:
        cells = []
        for c in row[1:]:
            colour = PASS_COLOUR if c.startswith(("✓", "PASS")) else FAIL_COLOUR if c.startswith(("✗", "FAIL", "ERROR")) else ""
            style = f' style="color:{colour}"' if colour else ""
            cells.append(f'<td class="mono"{style}>{_e(c)}</td>')
        out.append(f"<tr><td>{_e(row[0])}</td>{''.join(cells)}</tr>")
    out.append("</table></section>")
    return "\n".join(out)


def render(reports, matrices=(), base: str | None = None) -> str:
    """The page; base: the directory it is written to (paths under it are shown relative to it)."""
    svg = _Svg()
    ok = all(r.ok for r in reports)
    sections = [_matrix_section(m) for m in matrices] + [_report_section(svg, i, r, base)
                                                        for i, r in enumerate(reports)]
    title = f"faultinj report: {', '.join(r.scenario for r in reports)}"
    return "\n".join([
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style><script>{_JS}</script></head><body>",
        f'<h1>faultinj report <span class="badge {"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span></h1>',
        f'<p class="meta">{len(reports)} scenario(s) · written {time.strftime("%Y-%m-%d %H:%M:%S %Z")} · '
        f'<label><input type="checkbox" id="only-failed"> only failed checks</label></p>',
        *sections, "</body></html>"])


def write(reports, path: str, matrices=()) -> str:
    target = Path(path)
    text = render(reports, matrices, str(target.resolve().parent))
    if target.parent and not target.parent.exists():
        os.makedirs(target.parent, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return str(target)
