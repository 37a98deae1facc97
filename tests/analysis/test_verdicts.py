"""The nucleation verdict's rules on hand-made states and edges: what each condition decides."""

from __future__ import annotations

from dataclasses import replace

from crystallab.analysis import Thresholds
from crystallab.analysis.types import EnsembleState, Estimate, SeedP, Transition
from crystallab.analysis.verdicts import nucleation

E = Estimate.of
CRYSTAL = EnsembleState(
    checkpoint="sft", task="t", ensemble="chat", step=None, split="heldout", state="crystal", reason="one basin",
    n_prompts=6, n_valid=6, invalid_prompts=[], read_by="families", params={"valid_mass": E(0.99)}, phi_p=None,
    phi_relabellings=None, families=[], basins=[["a", "b"]], aggregate=[0.7, 0.2, 0.1], replicas=3,
)  # fmt: skip
EDGE = Transition(
    task="t", parent="base", child="sft", root="base", d={"qa": E(0.04), "dice": E(0.5)},
    z={"qa": E(0.8, 0.7, 1.1), "dice": E(9.0)}, k_star="qa", k_star_counts={"qa": 3}, margin=E(5.0),
    inside=True, d_chat0=E(None), seed_p=SeedP(0.001, 3628799, False, True), attraction=E(0.6, 0.4, 0.8),
    d_data=E(0.3), support=["1", "2"], retention=E(None), rho=E(None), redistribution=E(None), replicas=3,
)  # fmt: skip


def test_nucleation_holds_only_when_pulled_past_the_data():
    th = Thresholds()
    assert nucleation(CRYSTAL, EDGE, 0.001, th).value == "holds"
    went_to_data = nucleation(CRYSTAL, replace(EDGE, attraction=E(-0.3, -0.5, -0.1)), 0.001, th)
    assert went_to_data.value == "fails" and "attraction A = -0.30" in went_to_data.why
    outside = nucleation(CRYSTAL, replace(EDGE, inside=False, z={"qa": E(2.4)}), 0.001, th)
    assert outside.value == "fails" and "outside every basin" in outside.why
    split = nucleation(CRYSTAL, replace(EDGE, k_star_counts={"qa": 2, "dice": 1}), 0.001, th)
    assert split.value == "fails" and "without a common seed" in split.why


def test_sft_onto_the_basin_itself_is_a_positive_control_not_evidence():
    """The data's answers are basin k*'s own distribution (A undefined): everything else met is
    still inconclusive, since the outcome was built in; with another condition unmet, it fails."""
    th = Thresholds()
    built_in = replace(EDGE, attraction=E(None))
    v = nucleation(CRYSTAL, built_in, 0.001, th)
    assert v.value == "inconclusive" and "positive control" in v.why and "z = 0.80" in v.why
    v = nucleation(CRYSTAL, replace(built_in, inside=False, z={"qa": E(1.4)}), 0.001, th)
    assert v.value == "fails" and "A is undefined" in v.why and "outside every basin" in v.why
    assert nucleation(CRYSTAL, replace(EDGE, attraction=None), 0.001, th).value == "holds"  # no answers in the data
