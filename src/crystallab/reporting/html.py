"""The report page: one self-contained HTML string built from an Analysis and its saved figures.

Inline CSS, PNGs as base64 data URIs, one line of inline JS (click a figure to see it at full
size). Every text that comes from the analysis goes through ``html.escape``. Number cells
carry ``data-key`` so a test (or a reader's script) can find each figure.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any, Sequence

from crystallab.analysis.sweeps import size_trend
from crystallab.analysis.thresholds import Thresholds
from crystallab.analysis.types import Analysis, Estimate, Transition, Verdict
from crystallab.reporting import data as D
from crystallab.reporting.figures import Figures, TaskFigures
from crystallab.reporting.reading import how_to_read

CLAIMS = ("liquid", "nucleation", "settling")
STATE_PARAMS = ("n_basins", "phi", "spread", "h", "entropy_norm", "valid_mass")

CSS = """
:root{--fg:#1b1f24;--muted:#5e6875;--line:#e4e8ed;--card:#f7f9fb;--accent:#0b5cad}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
main{max-width:1440px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:40px 0 10px;padding-top:14px;border-top:1px solid var(--line)}
h3{font-size:15px;margin:22px 0 6px} h4{font-size:13.5px;margin:12px 0 2px}
.note{background:#fff8e6;border-left:4px solid #e0a100;padding:8px 12px;margin:12px 0}
a{color:var(--accent);text-decoration:none} a:hover{text-decoration:underline}
.muted{color:var(--muted)} .small{font-size:12.5px}
nav{font-size:13px;color:var(--muted)} nav a{margin-right:12px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 12px}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;color:var(--muted);font-size:11.5px;white-space:nowrap}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
td.why{max-width:420px} td.reason{min-width:230px;max-width:330px;color:var(--muted);font-size:11.5px}
.ci{display:block;font-size:11px;color:var(--muted)} table.verdicts ul.nums{columns:2;column-gap:22px;min-width:520px}
.wrap{overflow-x:auto}
ul.nums{margin:0;padding-left:14px;font-size:12px;font-variant-numeric:tabular-nums} ul.nums code{font-size:11px}
.v{display:inline-block;padding:0 7px;border-radius:9px;font-weight:650;font-size:12px}
.holds{background:#d7f0de;color:#17692f} .fails{background:#fbe0dd;color:#a8231a}
.inconclusive{background:#e9edf1;color:#4f5965}
.st{font-weight:600} .st-liquid{color:#9a6300} .st-crystal{color:#0b4f8a} .st-undefined{color:#6b6b6b}
figure{margin:10px 0 26px} figure img{display:block;max-width:100%;height:auto;border:1px solid var(--line);
border-radius:6px;cursor:zoom-in} figure.zoom{overflow-x:auto} figure.zoom img{max-width:none;cursor:zoom-out}
figcaption{color:var(--muted);font-size:12.5px;max-width:980px;margin-top:6px} figcaption b{color:var(--fg)}
code{font:11.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f0f2f5;padding:0 3px;
border-radius:3px}
ul.warnings li{margin:2px 0} footer{margin-top:40px;color:var(--muted);font-size:12px}
"""
JS = (
    "document.querySelectorAll('figure img').forEach(function(i){"
    "i.addEventListener('click',function(){i.parentNode.classList.toggle('zoom')})});"
)


def e(x: Any) -> str:
    return escape(str(x), quote=True)


def anchor(kind: str, task: str) -> str:
    return f"{kind}-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in str(task))


def num_td(key: str, x: Estimate | Any) -> str:
    """A number cell: the point, and its interval (if any) small under it."""
    if isinstance(x, Estimate) and x.value is not None and x.lo is not None and x.hi is not None:
        text = f'{e(D.fmt_num(x.value))}<span class="ci">[{e(D.fmt_num(x.lo))}, {e(D.fmt_num(x.hi))}]</span>'
    else:
        text = e(D.fmt_est(x) if isinstance(x, Estimate) or x is None else D.fmt_num(x))
    return f'<td class="num" data-key="{e(key)}">{text}</td>'


def _state(word: str) -> str:
    return f'<span class="st st-{e(word)}">{e(word)}</span>'


def _figure(png: Path | None, alt: str, caption: str) -> str:
    """``caption`` is trusted HTML built here from escaped parts."""
    if png is None:
        return ""
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    also = ", also SVG" if Path(png).with_suffix(".svg").is_file() else ""
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{e(alt)}"><figcaption>{caption} '
        f'<span class="small">(<code>figures/{e(Path(png).name)}</code>{also})</span></figcaption></figure>'
    )


# ---------------------------------------------------------------------------------------------
# verdicts


def _verdict_row(task: str, claim: str, v: Verdict | None) -> str:
    if v is None:
        return f'<tr><th>{e(claim)}</th><td colspan="5" class="muted">no verdict in the analysis</td></tr>'
    key = f"v/{task}/{claim}"
    nums = (
        "".join(
            f'<li data-key="{e(key)}/{e(k)}"><code>{e(k)}</code> {e(D.fmt_any(x))}</li>' for k, x in v.numbers.items()
        )
        or '<li class="muted">none</li>'
    )
    return (
        f'<tr data-claim="{e(claim)}"><th>{e(claim)}</th><td><span class="v {e(v.value)}">{e(v.value)}</span></td>'
        f'<td class="why">{e(v.why)}</td><td><ul class="nums">{nums}</ul></td>'
        f"{num_td(key + '/p_value', v.p_value)}{num_td(key + '/p_holm', v.p_holm)}</tr>"
    )


def verdicts(an: Analysis) -> str:
    out = []
    for task in an.tasks:
        per = an.verdicts.get(task, {})
        rows = "".join(_verdict_row(task, c, per.get(c)) for c in (*CLAIMS, *[c for c in per if c not in CLAIMS]))
        out.append(
            f'<h3><a href="#{anchor("task", task)}">{e(task)}</a></h3><div class="wrap">'
            f'<table class="verdicts" data-task="{e(task)}"><thead><tr><th>claim</th><th>verdict</th>'
            "<th>why</th><th>numbers behind it (value [interval])</th><th>p</th><th>p (Holm)</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
        )
    return "".join(out) + (
        '<p class="small muted">p: the raw seed_p of nucleation; p (Holm): corrected across '
        'the tasks of this analysis. What each verdict needs: <a href="#how-to-read">how to read'
        "</a>.</p>"
    )


# ---------------------------------------------------------------------------------------------
# per task


def states_table(an: Analysis, task: str) -> str:
    rows = []
    for s in (s for s in an.states if s.task == task):
        key = f"s/{task}/{s.checkpoint}/{s.ensemble}/{s.split or 'all'}"
        cells = "".join(num_td(f"{key}/{p}", s.params.get(p)) for p in STATE_PARAMS[:2])
        cells += num_td(f"{key}/phi_p", s.phi_p)
        cells += "".join(num_td(f"{key}/{p}", s.params.get(p)) for p in STATE_PARAMS[2:])
        step = "" if s.step is None else f' <span class="muted">step {e(s.step)}</span>'
        rows.append(
            f"<tr><td><b>{e(s.checkpoint)}</b>{step}</td><td>{e(s.ensemble)}</td><td>{e(s.split or 'all')}</td>"
            f'<td class="reason">{_state(s.state)}<br>{e(s.reason)}</td>{cells}'
            f'<td class="num" data-key="{e(key)}/n_valid">{s.n_valid} / {s.n_prompts}</td>'
            f'<td>{e(s.read_by)}</td><td class="num">{s.replicas}</td></tr>'
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "checkpoint",
            "ensemble",
            "split",
            "state and reason",
            "n_basins",
            "phi",
            "phi_p",
            "spread",
            "h",
            "entropy_norm",
            "valid mass",
            "valid / prompts",
            "read by",
            "replicas",
        )
    )
    return (
        f'<div class="wrap"><table class="states"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _edge_rows(task: str, t: Transition) -> list[tuple[str, str]]:
    """(figure, cell) rows of one edge, in reading order."""
    key = f"t/{task}/{t.parent}/{t.child}"
    k = t.k_star
    seed = (
        "n/a"
        if t.seed_p is None
        else D.fmt_num(t.seed_p.p)
        if t.seed_p.testable
        else f"not testable ({t.seed_p.n_relabellings} relabellings)"
    )
    counts = f' <span class="muted">(replicas: {e(D.fmt_any(t.k_star_counts))})</span>' if t.replicas > 1 else ""
    rows = [
        ("k*", f"<td><b>{e(k)}</b>{counts}</td>"),
        ("d_k*", num_td(f"{key}/d_k_star", t.d.get(k) if k else None)),
        ("z_k*", num_td(f"{key}/z_k_star", t.z.get(k) if k else None)),
        ("margin δ", num_td(f"{key}/margin", t.margin)),
        ("inside basin k*", f"<td>{e(D.fmt_num(t.inside))}</td>"),
        ("d_chat0", num_td(f"{key}/d_chat0", t.d_chat0)),
        ("seed_p", f'<td class="num" data-key="{e(key)}/seed_p">{e(seed)}</td>'),
        ("A (attraction)", num_td(f"{key}/attraction", t.attraction)),
        ("d_data", num_td(f"{key}/d_data", t.d_data)),
        ("S (parent's support)", f"<td>{e('{' + ', '.join(t.support) + '}')}</td>"),
        ("retention q(S)", num_td(f"{key}/retention", t.retention)),
        ("ρ", num_td(f"{key}/rho", t.rho)),
        ("redistribution", num_td(f"{key}/redistribution", t.redistribution)),
        ("replicas", f'<td class="num">{t.replicas}</td>'),
    ]
    for f in t.d:
        cell = (
            f'<td class="num" data-key="{e(key)}/d/{e(f)}">{e(D.fmt_est(t.d[f]))}'
            f'<span class="ci">z {e(D.fmt_est(t.z.get(f)))}</span></td>'
        )
        rows.append((f"d_k, z_k [{f}]", cell))
    return rows


def edges_table(an: Analysis, task: str) -> str:
    """One column per parent → child edge, one row per figure."""
    ts = D.transitions_of(an, task)
    if not ts:
        return '<p class="muted small">No parent → child edge with the ensembles it needs defined.</p>'
    cols = [_edge_rows(task, t) for t in ts]
    head = "".join(f"<th>{e(t.parent)} → {e(t.child)}</th>" for t in ts)
    names = list(dict.fromkeys(name for c in cols for name, _ in c))
    body = "".join(
        f"<tr><th>{e(n)}</th>" + "".join(dict(c).get(n, "<td>n/a</td>") for c in cols) + "</tr>" for n in names
    )
    return (
        f'<div class="wrap"><table class="edges"><thead><tr><th>figure</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _phase_caption(tf: TaskFigures) -> str:
    out = (
        "<b>Phase diagram.</b> h on x; phi (left) and spread (right) on y, for every checkpoint: raw hollow, chat "
        "filled, coloured by state; bars are intervals, arrows run parent → child (raw dashed)."
    )
    if tf.left_out:
        out += f" Not placed (undefined): {e(', '.join(tf.left_out))}."
    return out


def _heatmap_caption(an: Analysis, task: str, ens: str, panels: list[D.Panel], v_min: float) -> str:
    out = [
        (
            f"<b>Basins, {e(ens)} prompts.</b> One panel per checkpoint; rows grouped and boxed by family, each box "
            "in its basin's colour and labelled with it (B<i>n</i>); column v is the valid mass."
        )
    ]
    if ens == "raw":
        for t in D.transitions_of(an, task):
            if t.root == an.root and t.k_star:
                z = t.z.get(t.k_star)
                out.append(
                    f"k* of <b>{e(t.child)}</b>: <b>{e(t.k_star)}</b> (z = {e(D.fmt_est(z))}), marked red on "
                    f"<b>{e(an.root)}</b>."
                )
    for p in panels:
        if p.invalid:
            out.append(
                f"Invalid in {e(p.checkpoint)} (v &lt; {e(D.fmt_num(v_min))}, greyed, left out): "
                f'<span data-key="invalid/{e(task)}/{e(p.checkpoint)}/{e(ens)}">'
                f"{e(', '.join(p.invalid))}</span>."
            )
        if p.read_by == "prompts":
            out.append(f"{e(p.checkpoint)} is read prompt by prompt (one family): each row its own basin.")
    return " ".join(out)


def _dyn_caption(i: int, f: Any) -> str:
    d, t = f.dyn, f.dyn.test
    key = f"dyn/{i}"

    def iv(name: str) -> str:
        lo_hi = t.get(f"{name}_interval") or [None, None]
        return D.fmt_est(Estimate(t.get(name), *lo_hi[:2]))

    share = t.get("share_logistic")
    out = (
        f"<b>{e(d.checkpoint)}, coordinate {e(d.coordinate)}</b> (k* {e(f.k_star or 'n/a')}): transition test "
        f'<b data-key="{key}/verdict">{e(t.get("verdict"))}</b>, t0 <span data-key="{key}/t0">{e(iv("t0"))}</span>, '
        f'width <span data-key="{key}/w">{e(iv("w"))}</span>; logistic beats exponential by ΔBIC &gt; '
        f"{e(D.fmt_num(t.get('dbic')))} in {e(D.fmt_num(None if share is None else 100 * share))} % of "
        f"{e(t.get('n_replicas'))} replica(s); total change {e(D.fmt_num(t.get('total_change')))} against "
        f"{e(D.fmt_num(t.get('n_sd')))} × replica sd {e(D.fmt_num(t.get('replica_sd')))}."
    )
    if not any(v is not None for v in d.chi):
        out += " χ(t) undefined (needs ≥ 3 replicas)."
    if t.get("note"):
        out += f" Note: {e(t['note'])}."
    return out


def clusters_table(rows: list[dict[str, Any]]) -> str:
    """An open task's semantic options: each cluster's id, size and exemplars (medoid first)."""
    embedder = json.loads(rows[0]["embedder"]) if rows and rows[0].get("embedder") else {}
    body = "".join(
        f'<tr><td>{e(r["option"])}</td><td class="num">{r["size"]}</td><td>'
        + " · ".join(f"<q>{e(x)}</q>" for x in r["exemplars"])
        + "</td></tr>"
        for r in rows
    )
    sizes = [int(r["size"]) for r in rows]
    repeat = sum(x for x in sizes if x >= 2) / max(1, sum(sizes))
    warn = (
        f'<p class="note"><b>Answers rarely repeat:</b> {repeat:.0%} of the completions share a cluster with '
        "another. At this number of samples the prompts' distributions barely overlap, every family's radius is "
        "as wide as the distances between families, and the states below are not informative; sample more, or "
        "read the exemplars.</p>"
        if repeat < 0.5
        else ""
    )
    return warn + (
        f'<p class="small muted">Options are clusters of the completions of every checkpoint of this folder, '
        f"embedded with {e(embedder.get('name', '?'))} and cut at cosine distance {e(rows[0]['threshold'])} "
        "(docs/open.md); ⊥ holds empty and degenerate completions.</p>"
        f'<table class="small"><tr><th>option</th><th>completions</th><th>exemplars (medoid first)</th></tr>'
        f"{body}</table>"
    )


def task_section(
    an: Analysis, task: str, tf: TaskFigures, th: Thresholds, clusters: list[dict[str, Any]] | None = None
) -> str:
    opts = an.options.get(task, [])
    parts = [
        f'<h2 id="{anchor("task", task)}">{e(task)}</h2>',
        f'<p class="small muted">{len(opts)} options: {e(", ".join(opts))}</p>',
        *([f'<h3 id="{anchor("clusters", task)}">Semantic options</h3>', clusters_table(clusters)] if clusters else []),
        f'<h3 id="{anchor("phase", task)}">Phase diagram</h3>',
        _figure(tf.phase, f"{task} phase diagram", _phase_caption(tf))
        or '<p class="muted small">No defined ensemble to place.</p>',
        f'<h3 id="{anchor("states", task)}">States</h3>',
        states_table(an, task),
        f'<h3 id="{anchor("edges", task)}">Relations along the edges</h3>',
        edges_table(an, task),
        f'<h3 id="{anchor("basins", task)}">Basins on the prompt × option heatmaps</h3>',
    ]
    parts += [
        _figure(png, f"{task} {ens} heatmaps", _heatmap_caption(an, task, ens, panels, th.v_min))
        for ens, png, panels in tf.heatmaps
    ] or ['<p class="muted small">No rows to draw.</p>']
    parts.append(f'<h3 id="{anchor("dynamics", task)}">Nucleation coordinate along training</h3>')
    none = '<p class="muted small">No tracked training run (4 or more measured steps) for this task.</p>'
    parts += [
        _figure(f.png, f"dynamics of {f.dyn.checkpoint}", _dyn_caption(an.dynamics.index(f.dyn), f))
        for f in tf.dynamics
    ] or [none]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# the page


def warnings_list(an: Analysis, figs: Figures) -> list[str]:
    out = list(an.warnings) + list(figs.notes)
    for s in an.states:
        if s.split is None and s.read_by == "prompts" and s.state != "undefined":
            out.append(f"{s.checkpoint}/{s.task}/{s.ensemble}: one family, read prompt by prompt (radius ε each)")
    for d in an.dynamics:
        if d.test.get("note"):
            out.append(f"dynamics {d.checkpoint}/{d.task}: {d.test['note']}")
    return out


def _sweeps(figs: Figures) -> str:
    parts = ['<h2 id="sweeps">Sweeps</h2>']
    for s, png in figs.sweeps:
        n = s.numbers
        fam = n.get("families")
        width = n.get("width")
        cap = (
            f"<b>{e(s.name)}</b> ({e(s.verdict)}"
            + (f"; families {e(fam[0])} → {e(fam[1])}" if fam else "")
            + f"): sharpness Σ = {e(D.fmt_est(s.sharpness))}, λ_c = {e(D.fmt_est(s.lambda_c))}, dip "
            f"{e(D.fmt_num(s.dip))} (p {e(D.fmt_num(s.dip_p))}"
            + (f", at {e(s.control or 'λ')} = {e(D.fmt_num(n['dip_at']))}" if n.get("dip_at") is not None else "")
            + f"), hysteresis p {e(D.fmt_num(s.hysteresis_p))}"
            + (f", width {e(D.fmt_est(Estimate.of(*width)))}" if width else "")
            + "."
        )
        parts.append(_figure(png, f"sweep {s.name}", cap))
    if figs.widths is not None:
        trend, why = size_trend(
            {s.numbers["size"]: s.numbers["width"] for s, _ in figs.sweeps if s.numbers.get("size")}
        )
        cap = f"<b>Size scaling: {e(trend)}</b>: {e(why)}."
        parts.append(_figure(figs.widths, "transition width against size", cap))
    parts.append(
        '<p class="small">How to read a sweep: the SFT data mix two base families, λ = 0 all A, λ = 1 all B; '
        "m = -1 sits at A, +1 at B. A model that only fits its data follows the dashed fitting null m_lin(λ). "
        "Sharp needs Σ (the steepest slope over the null's) with its lower bound above 2, and bimodal replicas at "
        "λ_c (dip test) or hysteresis (runs continued at λ_c from the A and B ends still apart) at p < α. "
        "The width is |m(1) - m(0)| over the steepest slope, in λ: about 1 for a linear response, the grid "
        "spacing for a step; a true transition narrows as the model grows, a crossover keeps its width. "
        "A steps or learning-rate sweep holds the data fixed and varies the training amount on a log grid; "
        "its null (dashed) is a relaxation at a constant rate from the base's m to the data's, whose steepest "
        "slope in log10 of the control is fixed by its amplitude alone, so Σ there measures the shape of the "
        "change (a jump) rather than its speed; it has no hysteresis arm.</p>"
    )
    return "\n".join(parts)


def _melting(figs: Figures) -> str:
    assert figs.melting is not None
    curves, png = figs.melting
    lines = []
    for c in curves:
        t_m = (
            f"T_m = {c.t_m:g} in ({c.t_m_interval[0]:g}, {c.t_m_interval[1]:g}]"
            if c.t_m is not None and c.t_m_interval
            else c.verdict
        )
        lines.append(f"<li>{e(c.checkpoint)} / {e(c.task)} / {e(c.ensemble)} ({e(c.truncation)}): {e(t_m)}</li>")
    cap = (
        "Order parameters against the sampling temperature, every checkpoint on the same axes (bands: "
        "intervals; markers: the state at each T; dotted: T_m). As T grows every prompt flattens towards "
        "uniform, so spread falls and valid mass leaves the options even in a liquid: a crystal at high T "
        "with h near 1 is a uniform gas, not an ordered crystal."
    )
    return '<h2 id="melting">Melting curves</h2>' + _figure(png, "melting curves", cap) + f"<ul>{''.join(lines)}</ul>"


def _header(an: Analysis, title: str) -> str:
    cks = " · ".join(f"<b>{e(c.label)}</b>" + (f" ← {e(c.parent)}" if c.parent else " (root)") for c in an.checkpoints)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    toc = "".join(f'<a href="#{anchor("task", t)}">{e(t)}</a>' for t in an.tasks)
    return (
        f"<h1>crystallab report{': ' + e(title) if title else ''}</h1>"
        f'<p class="small muted">Checkpoints (parent links): {cks or "none"}. Root: <b>{e(an.root)}</b>; method '
        f"{e(an.method)}; crystallab {e(an.crystallab_version)}; analysis v{an.version}; generated {e(now)}.</p>"
        f'<nav><a href="#verdicts">verdicts</a><a href="#warnings">warnings</a>{toc}'
        f'{"<a href=#sweeps>sweeps</a>" if an.sweeps else ""}<a href="#how-to-read">how to read</a></nav>'
    )


def render(an: Analysis, figs: Figures, th: Thresholds, title: str = "", notes: Sequence[str] = ()) -> str:
    """The page; ``notes`` are paragraphs about the run shown above the verdicts (the lab says
    there what an experiment trained, and labels a positive control as one)."""
    warns = warnings_list(an, figs)
    items = "".join(f"<li>{e(w)}</li>" for w in warns) or '<li class="muted">none</li>'
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>crystallab report · {e(title)}</title><style>{CSS}</style></head><body><main>",
        _header(an, title),
        "".join(f'<p class="note"><b>About this run.</b> {e(n)}</p>' for n in notes),
        '<h2 id="verdicts">Verdicts</h2>',
        verdicts(an),
        f'<h2 id="warnings">Warnings ({len(warns)})</h2><ul class="warnings">{items}</ul>',
    ]
    parts += [task_section(an, t, figs.tasks[t], th, figs.clusters.get(t)) for t in an.tasks if t in figs.tasks]
    if figs.sweeps:
        parts.append(_sweeps(figs))
    if figs.melting:
        parts.append(_melting(figs))
    parts += [
        '<h2 id="how-to-read">How to read</h2>',
        how_to_read(th),
        "<footer>Definitions: SCIENCE.md version 2 (docs/science.md); this page: docs/report.md.</footer>",
        f"</main><script>{JS}</script></body></html>",
    ]
    return "\n".join(p for p in parts if p)
