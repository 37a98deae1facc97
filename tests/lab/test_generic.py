"""Generic SFT data: size, kinds, determinism, correct answers, and the option-mention variants."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from scipy.stats import chi2

import crystallab.lab.generic as G
from crystallab.lab.generic import KINDS, generic_examples, option_mentions, render

NUMBERS = [str(i) for i in range(1, 11)]
HUNDRED = [str(i) for i in range(1, 101)]
COLOURS = ["red", "blue", "green", "yellow", "orange", "purple", "black", "white", "brown", "pink"]
ANIMALS = ["dog", "cat", "cow", "horse", "owl"]

# written out here, not read from the module, so the check is independent of it
FACTORS = {
    ("metres", "centimetres"): 100,
    ("kilometres", "metres"): 1000,
    ("centimetres", "millimetres"): 10,
    ("kilograms", "grams"): 1000,
    ("litres", "millilitres"): 1000,
    ("hours", "minutes"): 60,
    ("minutes", "seconds"): 60,
    ("days", "hours"): 24,
    ("weeks", "days"): 7,
    ("years", "months"): 12,
}


def _ints(s: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", s)]


def _plural(unit: str) -> str:
    return unit if unit.endswith("s") else unit + "s"


def expected(e: dict[str, str]) -> str | None:
    """The right answer, recomputed from the instruction text alone (None: not parsed)."""
    ins, kind = e["instruction"], e["kind"]
    if kind == "arithmetic":
        a, b = _ints(ins)
        if re.match(r"(Subtract|Take) \d+ (from|away from) \d+", ins):
            return str(b - a)
        if " minus " in ins or " take away " in ins:
            return str(a - b)
        assert re.search(r"plus|Add|sum|make", ins), ins
        return str(a + b)
    if kind == "conversion":
        for pat, order in (
            (r"How many (\w+) are in (\d+) (\w+)\?", (1, 0, 2)),
            (r"Convert (\d+) (\w+) to (\w+)\.", (0, 2, 1)),
            (r"(\d+) (\w+) is how many (\w+)\?", (0, 2, 1)),
        ):
            m = re.fullmatch(pat, ins)
            if m:
                g = m.groups()
                x, small, big = int(g[order[0]]), g[order[1]], _plural(g[order[2]])
                return str(x * FACTORS[(big, small)])
        return None
    if kind == "counting":
        m = re.fullmatch(r"(?:How many letters are in the word |Count the letters in )(\w+)[?.]", ins)
        if m:
            return str(len(m.group(1)))
        m = re.fullmatch(r"How many letters are in the phrase ([a-z ]+), not counting spaces\?", ins)
        if m:
            return str(len(m.group(1).replace(" ", "")))
        m = re.fullmatch(r"(?:How many words are in|Count the words in) this list: ([a-z, ]+)\??", ins)
        if m:
            return str(len(m.group(1).split(", ")))
        return None
    if kind == "spelling":
        ends = r"(?: with .*|, one letter at a time\.| letter by letter\.)"
        m = re.fullmatch(r"(?:Spell the word|Write|Spell out|Spell) ([a-z]+)" + ends, ins)
        if m is None:
            return None
        w = m.group(1)
        return ("-" if "hyphen" in ins else " ").join(w)
    if kind == "reversal":
        if ":" in ins:
            return ", ".join(reversed(ins.split(": ", 1)[1].split(", ")))
        m = re.fullmatch(r"(?:Spell the word|Write|Reverse the letters of) ([a-z]+)(?: backwards)?\.", ins)
        return m.group(1)[::-1] if m else None
    if kind == "copy":
        m = re.fullmatch(r"(?:Repeat the word|Say the word|Write the word) ([a-z ]+?)(?: again)?\.", ins)
        m = m or re.fullmatch(r"[A-Z][a-z ]+: ([a-z ]+)", ins)
        return m.group(1) if m else None
    return None


# 1. size, kinds, balance, determinism ---------------------------------------------------------


def test_size_kinds_and_balance():
    ex = generic_examples()
    assert len(ex) == 1200 and len(KINDS) >= 8
    counts = Counter(e["kind"] for e in ex)
    assert set(counts) == set(KINDS)
    assert all(0.8 * 1200 / len(KINDS) <= c <= 1.2 * 1200 / len(KINDS) for c in counts.values()), counts
    for e in ex:
        assert set(e) == {"kind", "instruction", "completion"}
        assert e["completion"] and e["completion"] == e["completion"].strip()
        assert (e["instruction"] + e["completion"]).isascii()
    for kind in KINDS:  # several wordings per kind
        starts = {" ".join(e["instruction"].split()[:2]) for e in ex if e["kind"] == kind}
        assert len(starts) >= 2, kind


def test_deterministic_for_a_seed_and_different_across_seeds():
    for kw in ({}, {"options": NUMBERS}, {"options": COLOURS, "mentions": "known"}):
        a, b = generic_examples(500, seed=3, **kw), generic_examples(500, seed=3, **kw)
        assert a == b
        assert a != generic_examples(500, seed=4, **kw)


def test_kinds_can_be_chosen():
    ex = generic_examples(100, kinds=("arithmetic", "spelling"))
    assert Counter(e["kind"] for e in ex) == {"arithmetic": 50, "spelling": 50}
    with pytest.raises(ValueError, match="unknown kinds"):
        generic_examples(10, kinds=("poetry",))


# 2. every answer is right ---------------------------------------------------------------------


@pytest.mark.parametrize("options", [(), NUMBERS, COLOURS])
def test_answers_are_correct(options):
    ex = generic_examples(3000, seed=1, options=options, mentions="avoid")
    checked = Counter()
    for e in ex:
        want = expected(e)
        if e["kind"] in ("arithmetic", "conversion", "counting", "spelling", "reversal", "copy"):
            assert want is not None, e
        if want is not None:
            assert e["completion"] == want, e
            checked[e["kind"]] += 1
    assert all(checked[k] > 100 for k in ("arithmetic", "conversion", "counting")), checked


def test_known_mentions_answers_are_correct():
    ex = generic_examples(3000, seed=2, options=NUMBERS, mentions="known", mention_rate=0.5)
    n = 0
    for e in ex:
        if e["kind"] in ("arithmetic", "conversion", "counting"):
            assert e["completion"] == expected(e), e
            n += 1
    assert n > 1500


def test_facts_answers_are_correct():
    facts = G.load_facts()
    for e in generic_examples(2000, seed=5, kinds=("lookup", "yesno")):
        ins, comp = e["instruction"], e["completion"]
        if e["kind"] == "lookup":
            assert any(k in ins and v == comp for t in facts.values() for k, v in t.items()), e
        else:
            assert comp in ("yes", "no")
            word = next((w for w in ("capital", "plural", "opposite", "say", "sound") if w in ins), "colour")
            section = {"say": "sounds", "sound": "sounds", "colour": "colours"}.get(word, word + "s")
            true = False
            for k, v in facts[section].items():
                rest, hit = re.subn(rf"\b{k}\b", "", ins, flags=re.I)
                true = true or bool(hit and re.search(rf"\b{v}\b", rest))
            assert (comp == "yes") == true, e
    answers = Counter(e["completion"] for e in generic_examples(2000, seed=5, kinds=("yesno",)))
    assert 0.4 < answers["yes"] / 2000 < 0.6


def test_fact_table():
    facts = G.FACTS  # read lazily from the shipped facts.yaml
    assert facts is G.load_facts()
    assert {"capitals", "colours", "sounds", "opposites", "plurals"} <= set(facts)
    n = sum(len(t) for t in facts.values())
    assert 60 <= n <= 100
    for t in facts.values():
        for k, v in t.items():
            assert isinstance(k, str) and isinstance(v, str) and (k + v).isascii()
    assert facts["capitals"]["France"] == "Paris"
    with pytest.raises(AttributeError):
        G.NOT_THERE  # noqa: B018


# mentions="natural": nothing filtered, the mentions measured -------------------------------------


def test_natural_is_the_unfiltered_data_and_its_mentions_are_measured():
    natural = generic_examples(2000, seed=9, options=NUMBERS, mentions="natural")
    assert natural == generic_examples(2000, seed=9, options=(), mentions="avoid")  # the same draws, none refused
    m = option_mentions([e["completion"] for e in natural], NUMBERS)
    assert 0.05 < m["share_with_mention"] < 0.15
    # letter counts of 3..10-letter words put the mentions on the middle numbers, not uniformly
    assert m["dist"][NUMBERS.index("1")] < m["dist"][NUMBERS.index("5")]
    with pytest.raises(ValueError, match="mention_dist"):
        generic_examples(10, options=NUMBERS, mentions="natural", mention_dist=[1.0] * 10)


# 3. mentions="none" ---------------------------------------------------------------------------


@pytest.mark.parametrize("mentions", ["none", "avoid"])
@pytest.mark.parametrize("options", [NUMBERS, HUNDRED, COLOURS, ANIMALS])
def test_none_mentions_no_option(options, mentions):
    ex = generic_examples(2000, seed=7, options=options, mentions=mentions)
    assert len(ex) == 2000
    m = option_mentions([e["completion"] for e in ex], options)
    assert m["share_with_mention"] == 0 and m["dist"] is None and m["n"] == 2000
    assert sum(m["counts"].values()) == 0
    kinds = Counter(e["kind"] for e in ex)
    numeric = mentions == "none" and options in (NUMBERS, HUNDRED)
    # with 1..100 and "avoid", counting (answers under 41) gives its turns to the others
    assert len(kinds) == 5 if numeric else len(kinds) >= 7
    assert max(kinds.values()) < 2000 / len(kinds) * 1.5, kinds


def test_none_with_numeric_options_holds_no_number_at_all():
    """Numbers steered away from the options would teach that answers lie outside them."""
    ex = generic_examples(3000, seed=8, options=NUMBERS, mentions="none")
    assert not any(ch.isdigit() for e in ex for ch in e["completion"])
    assert not {e["kind"] for e in ex} & {"arithmetic", "counting", "conversion"}
    words = generic_examples(3000, seed=8, options=COLOURS, mentions="none")
    assert {"arithmetic", "counting", "conversion"} <= {e["kind"] for e in words}  # numbers are not colours
    with pytest.raises(ValueError, match="leaves no kind"):
        generic_examples(10, options=NUMBERS, kinds=("arithmetic", "counting"))


def test_avoid_numbers_never_answer_one_to_ten():
    ex = generic_examples(3000, seed=8, options=NUMBERS, mentions="avoid")
    for e in ex:
        if e["kind"] in ("arithmetic", "counting", "conversion"):
            assert int(e["completion"]) not in range(1, 11), e
    # without options they do, so the variant does something
    plain = generic_examples(3000, seed=8)
    assert any(e["completion"] in NUMBERS for e in plain)
    assert any(c in COLOURS for c in (e["completion"] for e in plain))


def test_impossible_none_raises():
    with pytest.raises(ValueError, match="avoids the options"):
        generic_examples(10, options=["yes", "no"], kinds=("yesno",))


# 4. mentions="known" --------------------------------------------------------------------------


def _chi2_p(counts: list[int], dist: list[float]) -> float:
    total = sum(counts)
    stat = sum((c - total * p) ** 2 / (total * p) for c, p in zip(counts, dist))
    return float(chi2.sf(stat, len(dist) - 1))


@pytest.mark.parametrize(
    "options, dist",
    [
        (NUMBERS, [0.3, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03]),
        (COLOURS, [0.05, 0.25, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.1]),
        (ANIMALS, None),
        (HUNDRED, None),
    ],
)
def test_known_mentions_follow_the_distribution(options, dist):
    n, rate = 8000, 0.3
    ex = generic_examples(n, seed=11, options=options, mentions="known", mention_dist=dist, mention_rate=rate)
    assert len(ex) == n
    comps = [e["completion"] for e in ex]
    m = option_mentions(comps, options)
    assert m["share_with_mention"] == pytest.approx(rate, abs=1 / n)
    assert all(option_mentions([c], options)["share_with_mention"] in (0, 1) for c in comps)
    assert sum(m["counts"].values()) == round(rate * n)  # each mention completion holds exactly one option
    want = [1 / len(options)] * len(options) if dist is None else dist
    assert _chi2_p([m["counts"][o] for o in options], want) > 1e-3
    assert sum(abs(a - b) for a, b in zip(m["dist"], want)) < (0.15 if len(options) <= 10 else 0.6)


def test_known_kinds_and_default_rate():
    ex = generic_examples(1200, seed=0, options=NUMBERS, mentions="known")
    assert option_mentions([e["completion"] for e in ex], NUMBERS)["share_with_mention"] == pytest.approx(0.3)
    carry = Counter(e["kind"] for e in ex if e["completion"] in NUMBERS)
    assert {"arithmetic", "counting"} <= set(carry) and "copy" not in carry  # numbers are asked, not copied
    words = generic_examples(1200, seed=0, options=COLOURS, mentions="known")
    carry = Counter(e["kind"] for e in words if e["completion"] in COLOURS)
    assert {"copy", "lookup"} <= set(carry)
    copies = [e for e in words if e["kind"] == "copy" and e["completion"] in COLOURS]
    assert all(e["completion"] in e["instruction"] for e in copies)
    only_copy = generic_examples(200, options=ANIMALS, mentions="known", kinds=("copy", "spelling"))
    assert option_mentions([e["completion"] for e in only_copy], ANIMALS)["share_with_mention"] == 0.3


def test_known_rejects_bad_input():
    with pytest.raises(ValueError, match="needs options"):
        generic_examples(10, mentions="known")
    with pytest.raises(ValueError, match="entries"):
        generic_examples(10, options=NUMBERS, mentions="known", mention_dist=[1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        generic_examples(10, options=["a", "b"], mentions="known", mention_dist=[1, -1])
    with pytest.raises(ValueError, match="alone"):
        generic_examples(10, options=["blue", "light blue"], mentions="known")
    with pytest.raises(ValueError, match="can answer"):
        generic_examples(10, options=["blue"], mentions="known", kinds=("spelling",))
    with pytest.raises(ValueError, match="mentions must be"):
        generic_examples(10, mentions="some")
    with pytest.raises(ValueError, match="only applies"):
        generic_examples(10, options=NUMBERS, mention_dist=[0.1] * 10)


# 5. option_mentions and render ----------------------------------------------------------------


def test_option_mentions_by_hand():
    m = option_mentions(["15", "1", "Blue.", "bluebell", "10 and 1", "nothing"], ["1", "10", "blue"])
    assert m["counts"] == {"1": 2, "10": 1, "blue": 1}
    assert m["dist"] == [0.5, 0.25, 0.25]
    assert m["share_with_mention"] == pytest.approx(3 / 6) and m["n"] == 6
    assert option_mentions(["r-e-d", "red"], ["red"])["counts"] == {"red": 1}
    empty = option_mentions([], ["1"])
    assert empty == {"counts": {"1": 0}, "dist": None, "share_with_mention": 0.0, "n": 0}
    assert option_mentions(iter(["7"]), NUMBERS)["counts"]["7"] == 1  # any iterable


def test_render():
    ex = generic_examples(20, seed=0)
    calls = []

    def chat(s: str) -> str:
        calls.append(s)
        return f"<|user|>{s}<|assistant|>"

    rows = render(ex, chat)
    assert calls == [e["instruction"] for e in ex]
    want = [{"prompt": f"<|user|>{e['instruction']}<|assistant|>", "completion": " " + e["completion"]} for e in ex]
    assert rows == want
