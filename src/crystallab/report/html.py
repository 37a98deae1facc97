"""Build the report's HTML from an analysis dict and the saved figures.

One self-contained page: inline CSS, PNGs as base64 data URIs, one line of inline JS (click a
figure to see it at full size). Every piece of text from the analysis goes through
``html.escape``.
"""

from __future__ import annotations

import base64
import math
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from crystallab.report import preferred_set, states_by_task
from crystallab.report.plots import color

CLAIMS = ("liquid", "nucleation", "settling")
CLAIM_HELP = {
    "liquid": "the base checkpoint is liquid: many distinct answer distributions can be prompted out of it",
    "nucleation": "the first post-trained checkpoint collapses onto one seed distribution the base model already had",
    "settling": "later post-training keeps the mass on the seed's options while moving it between them",
}
#: The numbers shown in a verdict cell's text, by claim (the first ones present are shown).
SHORT = {
    "liquid": (("diversity_raw", "div"), ("n_distinct_raw", "distinct"), ("diversity", "div")),
    "nucleation": (("seed_distance", "d"), ("seed_p_value", "p"), ("distance", "d"), ("p_value", "p")),
    "settling": (("retention", "ret"), ("new_mass", "new")),
}

CSS = """
:root{--fg:#1b1f24;--muted:#5e6875;--line:#e4e8ed;--card:#f7f9fb;--accent:#0b5cad;
--holds:#17692f;--holds-bg:#d7f0de;--fails:#a8231a;--fails-bg:#fbe0dd;--inc:#4f5965;--inc-bg:#e9edf1}
*{box-sizing:border-box}
body{margin:0;background:#fff;color:var(--fg);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:28px 36px 72px}
h1{font-size:25px;margin:0 0 2px;letter-spacing:-.01em}
h2{font-size:19px;margin:44px 0 12px;padding-top:16px;border-top:1px solid var(--line)}
h3{font-size:15px;margin:24px 0 8px}
a{color:var(--accent);text-decoration:none} a:hover{text-decoration:underline}
.muted,.sub{color:var(--muted)} .sub{margin:0 0 18px}
.small{font-size:12.5px}
nav.toc{font-size:13px;margin:10px 0 4px;color:var(--muted)} nav.toc a{margin-right:14px;white-space:nowrap}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:14px;margin:14px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px}
.card h3{margin:0 0 8px;font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.ladder{display:flex;flex-wrap:wrap;align-items:center;gap:6px}
.ck{display:inline-flex;align-items:center;gap:6px;border:1px solid var(--line);background:#fff;border-radius:8px;padding:3px 9px;font-size:13px}
.dot{width:10px;height:10px;border-radius:50%;display:inline-block;flex:none}
.arrow{color:var(--muted)}
dl.kv{display:grid;grid-template-columns:auto 1fr;gap:2px 14px;margin:0;font-size:13px}
dl.kv dt{color:var(--muted)} dl.kv dd{margin:0;font-variant-numeric:tabular-nums}
dl.kv.two{grid-template-columns:auto 1fr auto 1fr}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;color:var(--muted);font-size:11.5px;text-transform:uppercase;letter-spacing:.04em;white-space:nowrap}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{display:block;font-size:11px;color:var(--muted);font-variant-numeric:tabular-nums}
td.reason{color:var(--muted);font-size:12.5px;max-width:340px}
.wrap{overflow-x:auto}
table.verdicts td,table.verdicts th{border-bottom:none}
table.verdicts td.v{text-align:center;font-weight:650;border-radius:7px;border:3px solid #fff;min-width:150px;padding:7px 10px;cursor:help}
table.verdicts td.v small{display:block;font-weight:450;font-size:11.5px;opacity:.9;font-variant-numeric:tabular-nums}
table.verdicts td.task{font-weight:600;white-space:nowrap;padding-right:18px}
.holds{background:var(--holds-bg);color:var(--holds)} .fails{background:var(--fails-bg);color:var(--fails)}
.inconclusive,.missing{background:var(--inc-bg);color:var(--inc)}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600;line-height:20px;white-space:nowrap}
.b-liquid{background:#fdebd3;color:#87540f} .b-crystal{background:#d9e8f6;color:#1d4c7c}
.b-mixed{background:#ebe3f3;color:#5a3879} .b-undefined,.b-none{background:var(--inc-bg);color:var(--inc)}
.b-nucleation{background:#d9e8f6;color:#1d4c7c} .b-settling{background:#d7f0de;color:#17692f}
.ok{color:var(--holds);font-weight:600} .no{color:var(--fails);font-weight:600}
ul.why{margin:6px 0 10px;padding-left:20px;font-size:13px} ul.why li{margin:2px 0}
figure{margin:14px 0 30px}
figure img{display:block;max-width:100%;height:auto;border:1px solid var(--line);border-radius:8px;cursor:zoom-in;background:#fff}
figure.zoom{overflow-x:auto} figure.zoom img{max-width:none;cursor:zoom-out}
figcaption{color:var(--muted);font-size:13px;max-width:920px;margin-top:8px}
figcaption b{color:var(--fg)}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f0f2f5;padding:1px 4px;border-radius:4px}
details summary{cursor:pointer} details pre{white-space:pre-wrap;word-break:break-word;max-width:420px;max-height:220px;overflow:auto;
background:#f6f8fa;border:1px solid var(--line);border-radius:6px;padding:6px 8px;font-size:11.5px;margin:4px 0}
footer{margin-top:48px;color:var(--muted);font-size:12px;border-top:1px solid var(--line);padding-top:12px}
"""

JS = "document.querySelectorAll('figure img').forEach(function(i){i.addEventListener('click',function(){i.parentNode.classList.toggle('zoom')})});"


# --------------------------------------------------------------------------------------------
# formatting


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def num(x: Any, digits: int = 3) -> str:
    """A number for humans: 3 significant digits, ``–`` when missing or NaN."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if not _is_num(x):
        return str(x)
    v = float(x)
    if not math.isfinite(v):
        return "–"
    a = abs(v)
    if v == int(v) and a < 1e6:
        return str(int(v))
    if a >= 10**digits:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def interval(x: Any, digits: int = 3) -> str:
    """``[pt, lo, hi]`` → ``0.41 [0.35, 0.45]``; a bare number as itself."""
    if isinstance(x, (list, tuple)):
        if len(x) == 3 and all(v is None or _is_num(v) for v in x):
            pt, lo, hi = x
            if lo is None and hi is None or not (_is_num(lo) and math.isfinite(lo)):
                return num(pt, digits)
            return f"{num(pt, digits)} [{num(lo, digits)}, {num(hi, digits)}]"
        return "[" + ", ".join(interval(v, digits) for v in x) + "]"
    return num(x, digits)


def iv_html(x: Any, digits: int = 3) -> str:
    """An interval for a table cell: the point, and ``lo – hi`` small and muted under it."""
    if isinstance(x, (list, tuple)) and len(x) == 3 and all(v is None or _is_num(v) for v in x):
        pt, lo, hi = x
        if _is_num(lo) and _is_num(hi) and math.isfinite(lo) and math.isfinite(hi):
            return f'{e(num(pt, digits))}<span class="ci">{e(num(lo, digits))} – {e(num(hi, digits))}</span>'
        return e(num(pt, digits))
    return e(interval(x, digits))


def _point(x: Any) -> Any:
    return x[0] if isinstance(x, (list, tuple)) and x else x


def e(x: Any) -> str:
    return escape(str(x), quote=True)


def _badge(word: Any) -> str:
    w = str(word) if word not in (None, "") else "none"
    return f'<span class="badge b-{e(w)}">{e(w)}</span>'


def _mark(flag: Any) -> str:
    if flag is True:
        return '<span class="ok">✓</span>'
    if flag is False:
        return '<span class="no">✗</span>'
    return '<span class="muted">–</span>'


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{e(alt)}">'


def _figure(path: Path | None, alt: str, caption: str) -> str:
    """``caption`` is trusted HTML built here from escaped parts."""
    if path is None:
        return ""
    also = ", also as SVG" if Path(path).with_suffix(".svg").is_file() else ""
    return (f'<figure>{_img(path, alt)}<figcaption>{caption} <span class="small">(<code>figures/{e(Path(path).name)}</code>{also}; '
            "click to enlarge)</span></figcaption></figure>")


def _anchor(task: str) -> str:
    return "task-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in str(task))


# --------------------------------------------------------------------------------------------
# sections


def _summary(analysis: dict[str, Any], by_task: dict[str, list[dict]]) -> str:
    cks = sorted(analysis.get("checkpoints") or [], key=lambda c: c.get("index", 0))
    chips = []
    for c in cks:
        tip = f"index {c.get('index')} · stage {c.get('stage')} · model {c.get('model')}"
        chips.append(f'<span class="ck" title="{e(tip)}"><span class="dot" style="background:{color(int(c.get("index", 0)))}"></span>'
                     f'<b>{e(c.get("label"))}</b> <span class="muted small">{e(c.get("stage") or "")}</span></span>')
    ladder = '<span class="arrow">→</span>'.join(chips) or '<span class="muted">none</span>'
    models = "".join(f"<dt>{e(c.get('label'))}</dt><dd><code>{e(c.get('model') or '–')}</code></dd>" for c in cks)
    n_prompts = []
    for task, states in by_task.items():
        s = (states[0].get("sets") or {}) if states else {}
        counts = ", ".join(f"{k} {v.get('n_prompts', '?')}" for k, v in s.items() if k != "all")
        n_prompts.append(f"<dt>{e(task)}</dt><dd>{len(states[0].get('options') or [])} options · prompts: {e(counts or '–')}</dd>")
    th = analysis.get("thresholds") or {}
    th_rows = "".join(f"<dt>{e(k)}</dt><dd>{e(num(v, 4))}</dd>" for k, v in th.items())
    n_dyn = len(analysis.get("dynamics") or [])
    return f"""
<div class="cards">
  <div class="card"><h3>Ladder</h3><div class="ladder">{ladder}</div>
    <dl class="kv" style="margin-top:10px">{models}</dl></div>
  <div class="card"><h3>Tasks ({len(by_task)})</h3><dl class="kv">{''.join(n_prompts)}</dl>
    <p class="small muted" style="margin:8px 0 0">method <b>{e(analysis.get('method') or '–')}</b> · crystallab {e(analysis.get('crystallab_version') or '–')} ·
    {n_dyn} training run(s) with dynamics</p></div>
  <div class="card"><h3>Thresholds</h3><dl class="kv two">{th_rows or '<dd class="muted">not recorded</dd>'}</dl></div>
</div>"""


def _verdict_cell(claim: str, v: dict[str, Any] | None) -> str:
    if not v:
        return '<td class="v missing" title="no verdict in the analysis">–</td>'
    value = str(v.get("value") or "inconclusive")
    cls = value if value in ("holds", "fails", "inconclusive") else "inconclusive"
    nums = v.get("numbers") or {}
    short = []
    for key, lab in SHORT.get(claim, ()):
        if key in nums and len(short) < 2 and not any(s.startswith(lab + " ") for s in short):
            val = _point(nums[key])
            if _is_num(val) and math.isfinite(float(val)):
                short.append(f"{lab} {num(val, 2)}")
    if not short:
        for key, val in nums.items():
            val = _point(val)
            if _is_num(val) and math.isfinite(float(val)):
                short.append(f"{key} {num(val, 2)}")
                break
    tip = [str(v.get("why") or "")] + [f"{k} = {interval(val)}" for k, val in nums.items()]
    return (f'<td class="v {cls}" title="{e(chr(10).join(t for t in tip if t))}">{e(value)}'
            f'<small>{e(" · ".join(short)) or "&nbsp;"}</small></td>')


def _verdicts(analysis: dict[str, Any], by_task: dict[str, list[dict]]) -> str:
    verdicts = analysis.get("verdicts") or {}
    tasks = list(dict.fromkeys(list(by_task) + list(verdicts)))
    head = "".join(f'<th style="text-align:center" title="{e(CLAIM_HELP[c])}">{e(c)}</th>' for c in CLAIMS)
    rows = []
    for task in tasks:
        states = by_task.get(task, [])
        strip = ' <span class="arrow">→</span> '.join(
            f'<span title="{e(s.get("checkpoint"))}: {e(s.get("reason") or "")}">{_badge(s.get("state"))}</span>' for s in states)
        cells = "".join(_verdict_cell(c, (verdicts.get(task) or {}).get(c)) for c in CLAIMS)
        rows.append(f'<tr><td class="task"><a href="#{_anchor(task)}">{e(task)}</a></td>{cells}<td>{strip}</td></tr>')
    return f"""<div class="wrap"><table class="verdicts"><thead><tr><th>task</th>{head}<th>states along the ladder</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table></div>
<p class="small muted">Green: the claim holds, red: it fails, grey: inconclusive (e.g. no valid mass, overlapping intervals or a missing
checkpoint). Hover a cell for the reason and every number behind it; the cell shows the key ones
(<b>div</b>: diversity of the base model's raw prompts, <b>d</b> / <b>p</b>: distance and permutation p-value of the seed match,
<b>ret</b>: retention of the crystal's support).</p>"""


def _states_table(states: list[dict]) -> str:
    rows = []
    for s in states:
        sets = s.get("sets") or {}
        pref = preferred_set(sets)
        P = lambda name, key: ((sets.get(name) or {}).get("params") or {}).get(key)  # noqa: E731
        other = (sets.get(pref) or {}).get("other_mass") if pref else None
        step = s.get("step")
        dot = f'<span class="dot" style="background:{color(int(s.get("checkpoint_index", 0)))}"></span>'
        rows.append(
            f"<tr><td style=\"white-space:nowrap\">{dot} <b>{e(s.get('checkpoint'))}</b>"
            f"{' <span class=muted>step ' + e(step) + '</span>' if step is not None else ''}</td>"
            f"<td>{_badge(s.get('state'))}</td>"
            f"<td class=num>{iv_html(P('raw', 'diversity'))}</td>"
            f"<td class=num>{iv_html(P('chat', 'diversity'))}</td>"
            f"<td class=num>{iv_html(P('raw', 'n_distinct'))}</td>"
            f"<td class=num>{iv_html(P(pref, 'entropy_norm'))}</td>"
            f"<td class=num>{iv_html(P(pref, 'valid_mass'))}</td>"
            f"<td class=num>{e(num(other))}</td>"
            f"<td class=reason>{e(s.get('reason') or '')}</td></tr>"
        )
    pref = next((preferred_set(s.get("sets")) for s in states if preferred_set(s.get("sets"))), "chat")
    return f"""<div class="wrap"><table><thead><tr><th>checkpoint</th><th>state</th><th>diversity raw</th><th>diversity chat</th>
<th>n_distinct raw</th><th>entropy_norm {e(pref)}</th><th>valid mass {e(pref)}</th><th>⊥ mass</th><th>reason</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table></div>"""


def _transitions_table(transitions: list[dict]) -> str:
    if not transitions:
        return '<p class="muted small">No transitions: the ladder has a single checkpoint for this task.</p>'
    rows = []
    for t in transitions:
        seed = t.get("seed") or {}
        if seed.get("prompt_id"):
            text = seed.get("prompt_text")
            seed_html = (f"<b>{e(seed.get('prompt_id'))}</b> <span class=muted>({e(seed.get('prompt_kind') or '')})</span><br>"
                         f"distance {e(num(seed.get('distance')))} · p {e(num(seed.get('p_value')))} · confirmed {_mark(seed.get('confirmed'))}")
            if text:
                preview = " ".join(str(text).split())
                preview = preview[:48] + ("…" if len(preview) > 48 else "")
                seed_html += f"<details><summary class=small>{e(preview)}</summary><pre>{e(text)}</pre></details>"
        else:
            seed_html = '<span class="muted">–</span>'
        col = t.get("collapse") or {}
        div, ent = col.get("diversity"), col.get("entropy_norm")
        collapse = []
        for name, pair in (("diversity", div), ("entropy_norm", ent)):
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                a, b = pair
                collapse.append(f"{name} <b>{e(num(_point(a), 2))}</b> → <b>{e(num(_point(b), 2))}</b>"
                                f'<span class="ci">{e(interval(a, 2))} → {e(interval(b, 2))}</span>')
        if col:
            collapse.append(f"separated {_mark(col.get('holds'))}")
        support = t.get("support")
        settle = [
            f"retention <b>{e(num(t.get('retention')))}</b>",
            f"new mass {e(num(t.get('new_mass')))}",
            f"redistribution {e(num(t.get('redistribution')))}",
            f"support {{{e(', '.join(map(str, support)))}}}" if support else "support –",
            f"confirmed {_mark(t.get('settling_confirmed'))}",
        ]
        rows.append(
            f"<tr><td style=\"white-space:nowrap\"><b>{e(t.get('from'))}</b> → <b>{e(t.get('to'))}</b><br>"
            f"{_badge(t.get('from_state'))} → {_badge(t.get('to_state'))}</td>"
            f"<td>{_badge(t.get('kind'))}</td><td>{seed_html}</td>"
            f"<td class=small>{''.join(f'<div>{c}</div>' for c in collapse) or '–'}</td>"
            f"<td class=small>{''.join(f'<div>{c}</div>' for c in settle)}</td></tr>"
        )
    return f"""<div class="wrap"><table><thead><tr><th>step</th><th>kind</th><th title="the base prompt whose distribution is closest to this checkpoint's chat aggregate; p: permutation test">seed match</th>
<th>collapse (chat set, 95 % CI)</th><th>support retention</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"""


def _why(task: str, verdicts: dict[str, Any]) -> str:
    v = verdicts.get(task) or {}
    items = []
    for c in CLAIMS:
        if c in v:
            value = str(v[c].get("value") or "inconclusive")
            cls = value if value in ("holds", "fails", "inconclusive") else "inconclusive"
            items.append(f'<li><b>{e(c)}</b> <span class="badge {cls}">{e(value)}</span> {e(v[c].get("why") or "")}</li>')
    return f'<ul class="why">{"".join(items)}</ul>' if items else ""


CAPTION_PHASE = (
    "<b>How to read:</b> one point per checkpoint, arrows in ladder order. x: normalised entropy of the aggregate answer distribution "
    "(1 = uniform over the options, 0 = always the same option); y: <b>diversity</b>, the normalised Jensen–Shannon divergence across "
    "prompts (how much changing the prompt changes the answer). Filled markers: the {set} prompt set, with 95 % bootstrap intervals over "
    "prompts; hollow markers: the raw completion prompts. Shaded bands: crystal (diversity &lt; {crystal}, which also needs the entropy "
    "below the base checkpoint's lower bound) and liquid (raw diversity ≥ {liquid}, or ≥ {n_distinct} distinct distributions). "
    "Randomness crystallization is a path from the top band down into the bottom band, usually moving left."
)
CAPTION_HEATMAP = (
    "<b>How to read:</b> rows are prompts (raw completion contexts above the dashed line, chat instructions below), columns the task's "
    "options; colour is p̃(option | prompt), renormalised over the options (square-root colour scale, so small probabilities stay visible). "
    "The grey column ⊥ is the raw out-of-set mass. A liquid checkpoint has rows that differ from each other; a crystal repeats one row. "
    "The <b style=\"color:#d62728\">red box</b> marks the seed: the base prompt whose distribution the next checkpoint's chat aggregate "
    "matches best (solid in the checkpoint it comes from, dashed elsewhere). Light grey cells: not measured, or no valid mass."
)
CAPTION_AGG = (
    "<b>How to read:</b> bars are the aggregate distribution p̄ (mean of p̃ over the {set} prompts) of each checkpoint; the dotted line "
    "is uniform. Right: the mean raw ⊥ mass (answers outside the option set), which p̄ leaves out. Settling keeps p̄ on the options "
    "the crystal already used while moving mass between them."
)
CAPTION_DYN = (
    "<b>How to read:</b> order parameters measured along training with 95 % bootstrap bands. The red dashed line is the fitted "
    "transition step of diversity ({method}; RSS piecewise {rss_pw}, logistic {rss_lg}); sharpness = max slope / total change = {sharp} "
    "per step. Lower panel: susceptibility, the across-prompt variance of entropy_norm; a peak at the transition (here at step {peak}) "
    "is the signature of a sharp, phase-transition-like change rather than a gradual drift.{note}"
)


def render(analysis: dict[str, Any], figures: dict[str, Any], title: str = "") -> str:
    """The whole page as a string. ``figures`` as returned by ``make_figures``."""
    by_task = states_by_task(analysis)
    th = analysis.get("thresholds") or {}
    verdicts = analysis.get("verdicts") or {}
    transitions = analysis.get("transitions") or []
    dynamics = analysis.get("dynamics") or []
    pref = next((preferred_set(s.get("sets")) for st in by_task.values() for s in st if preferred_set(s.get("sets"))), "chat")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = " ".join(f'<a href="#{_anchor(t)}">{e(t)}</a>' for t in by_task)
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>crystallab report · {e(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>Randomness crystallization report{': ' + e(title) if title else ''}</h1>",
        f'<p class="sub">Generated {e(now)} by crystallab {e(analysis.get("crystallab_version") or "")} from '
        f"<code>analysis.json</code> and <code>distributions.parquet</code>. Phases are classified from measured order parameters, never from the stage names.</p>",
        f'<nav class="toc">Jump to: <a href="#verdicts">verdicts</a> <a href="#phase">phase diagram</a>'
        f'{" <a href=#dynamics>dynamics</a>" if dynamics else ""} {toc}</nav>',
        _summary(analysis, by_task),
        '<h2 id="verdicts">Verdicts</h2>',
        _verdicts(analysis, by_task),
    ]
    if figures.get("phase"):
        cap = CAPTION_PHASE.format(set=e(pref), crystal=e(num(th.get("crystal_diversity", 0.1))),
                                   liquid=e(num(th.get("liquid_diversity", 0.25))), n_distinct=e(num(th.get("liquid_n_distinct", 3))))
        parts += ['<h2 id="phase">Phase diagram</h2>', _figure(figures["phase"], "phase diagram: diversity vs entropy per checkpoint", cap)]
    if dynamics:
        parts.append('<h2 id="dynamics">Dynamics during training</h2>')
        for entry, png in zip(dynamics, list(figures.get("dynamics") or []) + [None] * len(dynamics)):
            note = f" Note: {e(entry.get('note'))}." if entry.get("note") else ""
            cap = CAPTION_DYN.format(method=e(entry.get("method") or "–"), rss_pw=e(num(entry.get("rss_piecewise"))),
                                     rss_lg=e(num(entry.get("rss_logistic"))), sharp=e(num(entry.get("sharpness"))),
                                     peak=e(num(entry.get("susceptibility_peak_step"))), note=note)
            parts.append(f"<h3>{e(entry.get('checkpoint'))} · {e(entry.get('task'))} · {e(entry.get('set'))} prompts · "
                         f"transition step {e(num(entry.get('transition_step')))}</h3>")
            parts.append(_figure(png, f"dynamics of {entry.get('checkpoint')} on {entry.get('task')}", cap) if png else
                         '<p class="muted small">No steps recorded.</p>')
    for task, states in by_task.items():
        pset = next((preferred_set(s.get("sets")) for s in states if preferred_set(s.get("sets"))), "chat")
        parts += [
            f'<h2 id="{_anchor(task)}">{e(task)}</h2>',
            _why(task, verdicts),
            "<h3>States</h3>",
            _states_table(states),
            "<h3>Transitions</h3>",
            _transitions_table([t for t in transitions if t.get("task") == task]),
            _figure((figures.get("heatmap") or {}).get(task), f"{task}: prompts × options heatmaps", CAPTION_HEATMAP),
            _figure((figures.get("aggregate") or {}).get(task), f"{task}: aggregate distributions", CAPTION_AGG.format(set=e(pset))),
        ]
    parts += [
        '<footer>Definitions: docs/science.md and docs/analysis.md in the crystallab repository. Intervals are '
        f"{e(num(100 * float(th.get('level', 0.95))))} % percentile bootstrap intervals over prompts "
        f"({e(num(th.get('n_boot')))} resamples).</footer>",
        f"</main><script>{JS}</script></body></html>",
    ]
    return "\n".join(p for p in parts if p)
