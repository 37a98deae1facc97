"""The page's "how to read" section: the thresholds in force and, for each verdict, what it
takes to hold, to fail and to stay inconclusive (SCIENCE.md v2), with the numbers substituted.

>>> from crystallab.analysis import Thresholds
>>> "ρ &lt; 0.8" in how_to_read(Thresholds())
True
"""

from __future__ import annotations

from html import escape

from crystallab.analysis.thresholds import Thresholds
from crystallab.reporting.data import fmt_num

MEANING = {
    "eps": "resolution ε (JS distance, nats^½): a basin's smallest radius, and how far RL must move the answer",
    "v_min": "prompts whose valid mass v(c) is below this are listed and left out",
    "alpha": "seed_p, Holm-corrected across tasks, must be below α",
    "cover": "the parent's support S is the smallest option set holding this share of its chat aggregate",
    "rho_min": "settling needs excess retention ρ at least this",
    "replica_share": "nucleation needs the same k* in at least this share of replicas",
    "dbic": "transition test: the logistic must beat the exponential by ΔBIC above this",
    "sharp_share": "… in at least this share of replicas (the replica share of the transition test)",
    "n_sd": "… with a total change above this many replica standard deviations",
    "n_boot": "bootstrap resamples (families, then prompts; replicas first where there are any)",
    "n_perm": "random relabellings when exact enumeration (≤ 2,000) is too large",
    "level": "interval level (percentile intervals)",
    "seed": "random seed of the resampling",
}


def thresholds_table(th: Thresholds) -> str:
    rows = "".join(
        f'<tr><th><code>{escape(k)}</code></th><td class="num" data-key="th/{escape(k)}">'
        f"{escape(fmt_num(getattr(th, k)))}</td><td>{escape(MEANING.get(k, ''))}</td></tr>"
        for k in Thresholds.names()
    )
    return (
        f'<table class="thresholds"><thead><tr><th>name</th><th>value</th><th>meaning</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def conditions(th: Thresholds) -> dict[str, dict[str, list[str]]]:
    """Per claim: the conditions under which it holds, fails, or stays inconclusive."""
    a, eps, rho, share = fmt_num(th.alpha), fmt_num(th.eps), fmt_num(th.rho_min), fmt_num(th.replica_share)
    return {
        "liquid": {
            "holds": [
                (
                    "the root's raw ensemble is liquid: n_basins ≥ 2, at least two kinds of context give "
                    "distributions that stay apart beyond each family's own radius"
                )
            ],
            "fails": ["every family of the root's raw ensemble sits in one basin (n_basins = 1)"],
            "inconclusive": [
                (
                    "the root's raw ensemble is undefined (fewer than 3 prompts with valid mass ≥ "
                    f"{fmt_num(th.v_min)}), or the root has no raw prompts for the task"
                )
            ],
        },
        "nucleation": {
            "holds": ["all the failure conditions below are avoided, on the root's first child"],
            "fails": [
                "the child's chat ensemble (held-out prompts where marked) is liquid (n_basins ≥ 2)",
                "q lies outside every root basin (z_k* > 1)",
                f"seed_p (Holm) ≥ α = {a}, where it is testable (at least 20 distinct relabellings)",
                "A ≤ 0 or its interval reaches 0, where the training answers are known",
                (f'with replicas, the same k* in fewer than {share} of them ("nucleation without a common seed")'),
            ],
            "inconclusive": [
                (
                    "the child's chat ensemble or the root's raw ensemble is undefined, "
                    "or the ladder has no child of the root"
                )
            ],
        },
        "settling": {
            "holds": [f"redistribution > ε = {eps} (RL moved the distribution) and ρ ≥ {rho}"],
            "fails": [f"ρ < {rho}: the last descendant's chat aggregate left the first child's support S"],
            "inconclusive": [
                f'redistribution ≤ ε = {eps} ("RL did not move the distribution")',
                ("S is every option (ρ undefined), a chat ensemble is undefined, or the first child has no descendant"),
            ],
        },
    }


def how_to_read(th: Thresholds) -> str:
    claims = []
    for claim, by in conditions(th).items():
        items = "".join(f'<li><span class="v {v}">{v}</span> if {escape(c)}</li>' for v, cs in by.items() for c in cs)
        claims.append(f'<h4>{claim}</h4><ul class="conds" data-claim="{claim}">{items}</ul>')
    dbic, sshare, n_sd = fmt_num(th.dbic), fmt_num(th.sharp_share), fmt_num(th.n_sd)
    return f"""
<p>Every figure is measured on the valid prompts' renormalised distributions p̃ and carries a
{escape(fmt_num(100 * th.level))} % percentile interval (cluster bootstrap over families, then prompts; replicas first
where there are any). Nothing reads a stage name: the root is the checkpoint without a parent.</p>
<h3>Thresholds</h3>
{thresholds_table(th)}
<h3>States</h3>
<ul><li><b>undefined</b>: fewer than 3 valid prompts; <b>liquid</b>: n_basins ≥ 2; <b>crystal</b>: n_basins = 1
(its h says whether the crystal is sharp or broad). phi and its permutation p say whether the family labels organise
the answers; they sit beside the state, not in it. An ensemble with one family is read prompt by prompt
(each prompt its own family with radius ε).</li></ul>
<h3>What each verdict needs</h3>
{"".join(claims)}
<h3>Transition test (dynamics)</h3>
<p><b>sharp</b> if the logistic beats the exponential by ΔBIC &gt; {dbic} in at least {sshare} of the replicas, its
midpoint t0 lies inside the observed window and the total change exceeds {n_sd} replica standard deviations;
<b>gradual</b> if a non-constant model beats the constant; else <b>none</b>. χ(t) is the variance across replicas
(needs ≥ 3); the across-prompt variance is shown beside it, not as a susceptibility.</p>
<h3>Figures</h3>
<ul><li>Phase diagram: raw ensembles hollow, chat filled; colour is the state; bars are intervals;
arrows run parent → child (dashed for raw).</li>
<li>Heatmaps: rows are prompts boxed by family (box colour = basin B<i>n</i>), columns options, colour p̃ on a
square-root scale; the narrow column is the valid mass v. Red dashed boxes on the root's raw heatmap mark the
family a child's chat aggregate lies nearest (k*). Hatched grey rows have v &lt; v_min and are left out;
* marks held-out prompts.</li>
<li>Dynamics: d_k(t) of the chat aggregate to every root family (k* red), d_data dashed where the training answers
are known, q(S)(t) for runs that follow a support, thin lines per replica, the t0 band where the test places it
inside the window.</li></ul>"""
