"""The three claims per task with their exact conditions (SCIENCE.md v2, "Verdicts per task").
Each verdict carries every number behind it, intervals included."""

from __future__ import annotations

from typing import Any

from crystallab.analysis.thresholds import Thresholds
from crystallab.analysis.types import EnsembleState, Transition, Verdict


def _state_numbers(s: EnsembleState) -> dict[str, Any]:
    p = s.params
    return {
        "checkpoint": s.checkpoint,
        "ensemble": s.ensemble,
        "split": s.split,
        "state": s.state,
        "n_valid": s.n_valid,
        "n_prompts": s.n_prompts,
        "read_by": s.read_by,
        "phi_p": s.phi_p,
        "basins": s.basins,
        **{k: p[k].to_json() for k in ("n_basins", "phi", "spread", "h", "valid_mass") if k in p},
    }


def liquid(root_raw: EnsembleState | None) -> Verdict:
    """Holds when the root's raw ensemble is liquid."""
    if root_raw is None:
        return Verdict("liquid", "inconclusive", "the root checkpoint has no raw prompts for this task", {})
    nums = _state_numbers(root_raw)
    if root_raw.state == "undefined":
        return Verdict(
            "liquid", "inconclusive", f"root '{root_raw.checkpoint}' raw ensemble undefined: {root_raw.reason}", nums
        )
    value = "holds" if root_raw.state == "liquid" else "fails"
    return Verdict(
        "liquid", value, f"root '{root_raw.checkpoint}' raw ensemble is {root_raw.state}: {root_raw.reason}", nums
    )


def _transition_numbers(t: Transition) -> dict[str, Any]:
    out: dict[str, Any] = {
        "parent": t.parent,
        "child": t.child,
        "k_star": t.k_star,
        "k_star_counts": t.k_star_counts,
        "d_k_star": t.d[t.k_star].to_json() if t.k_star else None,
        "z_k_star": t.z[t.k_star].to_json() if t.k_star else None,
        "margin": t.margin.to_json(),
        "inside": t.inside,
        "d_chat0": t.d_chat0.to_json(),
        "seed_p": None if t.seed_p is None else t.seed_p.p,
        "seed_p_testable": None if t.seed_p is None else t.seed_p.testable,
        "relabellings": None if t.seed_p is None else t.seed_p.n_relabellings,
        "replicas": t.replicas,
    }
    if t.attraction is not None:
        out["attraction"] = t.attraction.to_json()
        out["d_data"] = t.d_data.to_json() if t.d_data else None
    return out


def nucleation(
    child_chat: EnsembleState | None, t: Transition | None, p_holm: float | None, th: Thresholds, why_missing: str = ""
) -> Verdict:
    """Root → first child: crystal chat ensemble, inside basin k*, seed_p < α where testable,
    A > 0 with its interval above 0 where A applies, the same k* in >= 80 % of replicas.
    Inconclusive, not holds, when all of that is met but the SFT data's answers are basin k*
    itself (A undefined): the outcome was built into the data."""
    if child_chat is None or t is None or child_chat.state == "undefined":
        why = why_missing or (
            f"'{child_chat.checkpoint}' chat ensemble undefined: {child_chat.reason}" if child_chat else "no child"
        )
        return Verdict("nucleation", "inconclusive", why, {} if child_chat is None else _state_numbers(child_chat))
    nums = {**_state_numbers(child_chat), **_transition_numbers(t)}
    p = t.seed_p.p if t.seed_p else None
    failed: list[str] = []
    if child_chat.state != "crystal":
        failed.append(f"the chat ensemble is {child_chat.state} ({child_chat.reason})")
    z = t.z[t.k_star] if t.k_star else None
    z_text = z.text(".2f") if z else "n/a"
    if not t.inside:
        failed.append(f"q lies outside every basin (z_k* = {z_text} > 1)")
    if t.seed_p is not None and t.seed_p.testable and (p_holm is None or p_holm >= th.alpha):
        failed.append(f"seed_p = {p:.3g} (Holm {p_holm:.3g}) is not below α = {th.alpha}")
    built_in = t.attraction is not None and t.attraction.value is None  # A undefined: the data's t is basin k*
    if not built_in and t.attraction is not None and not (t.attraction.lo is not None and t.attraction.lo > 0):
        failed.append(
            f"attraction A = {t.attraction.text('.2f')} is not above 0: the model sits as close to its training answers"
        )
    share = max(t.k_star_counts.values()) / sum(t.k_star_counts.values()) if t.k_star_counts else 0.0
    common = share >= th.replica_share
    if t.replicas > 1 and not common:
        failed.append(f"nucleation without a common seed: k* across replicas {t.k_star_counts}")
    nums["k_star_share"] = share
    found = f"'{t.child}' chat is crystal and inside the basin of root family {t.k_star}"
    if built_in and not failed:  # fitting the data and nucleating cannot be told apart here
        why = (
            f"{found} (z = {z_text}), but its SFT answers were that basin's own distribution: "
            "fitting the data and nucleating cannot be told apart (a positive control, not evidence)"
        )
        return Verdict("nucleation", "inconclusive", why, nums, p, p_holm)
    if built_in:
        failed.append(f"the SFT answers are basin {t.k_star}'s own distribution, so A is undefined")
    if failed:
        return Verdict("nucleation", "fails", "; ".join(failed), nums, p, p_holm)
    test = (
        f"seed_p = {p:.3g} (Holm {p_holm:.3g})"
        if t.seed_p and t.seed_p.testable
        else f"seed_p not testable ({t.seed_p.n_relabellings if t.seed_p else 0} relabellings): basin test only"
    )
    why = f"{found} (z = {z_text}, margin {t.margin.text('.2f')}); {test}"
    if t.replicas > 1:
        why += f"; k* = {t.k_star} in {share:.0%} of {t.replicas} replicas"
    return Verdict("nucleation", "holds", why, nums, p, p_holm)


def settling(
    first: EnsembleState | None, last: EnsembleState | None, t: Transition | None, th: Thresholds, why_missing: str = ""
) -> Verdict:
    """First child → its last descendant: redistribution > ε (else inconclusive) and ρ >= 0.8."""
    if first is None or last is None:
        return Verdict("settling", "inconclusive", why_missing or "the ladder has no descendant of the first child", {})
    for s in (first, last):
        if s.state == "undefined":
            return Verdict(
                "settling", "inconclusive", f"'{s.checkpoint}' chat ensemble undefined: {s.reason}", _state_numbers(s)
            )
    if t is None:
        return Verdict("settling", "inconclusive", why_missing or "the root's raw ensemble is undefined", {})
    nums = {
        "from": t.parent,
        "to": t.child,
        "support": t.support,
        "retention": t.retention.to_json(),
        "rho": t.rho.to_json(),
        "redistribution": t.redistribution.to_json(),
        "to_state": last.state,
        "replicas": t.replicas,
    }
    red, rho = t.redistribution.value, t.rho.value
    if red is None or red <= th.eps:
        return Verdict(
            "settling",
            "inconclusive",
            f"RL did not move the distribution: redistribution {t.redistribution.text()} <= ε = {th.eps}",
            nums,
        )
    if rho is None:
        why = f"the support of '{t.parent}' is every option: ρ is undefined"
        return Verdict("settling", "inconclusive", why, nums)
    ok = rho >= th.rho_min
    why = (
        f"'{t.child}' keeps excess retention ρ = {t.rho.text('.2f')} on the support {t.support} of '{t.parent}' "
        f"({'>=' if ok else '<'} {th.rho_min}); retention {t.retention.text('.2f')}, moved {t.redistribution.text()}"
    )
    return Verdict("settling", "holds" if ok else "fails", why, nums)
