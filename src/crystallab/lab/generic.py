"""Generic SFT data: the assistant format taught on deterministic tasks only, never a random one.

Why. The lab asks whether SFT *nucleates* a model's answers to random requests ("pick a random
number between 1 and 10") onto a distribution the base model already holds. Generic SFT is the
control: it teaches the format (an instruction, then a short answer) on questions with one right
answer, so if the chat answers to random requests crystallise after it, the seed of the crystal
cannot have come from the SFT data. That argument is circular unless the data are checked: the
generic completions carry option strings by accident (arithmetic answers are numbers, facts hold
colours), and a skewed mix of them is itself a distribution the model could copy. So this module

- builds the data (``generic_examples``): arithmetic, copying, reversal, counting, unit
  conversion, spelling, yes/no facts and look-ups from a small shipped fact table
  (``facts.yaml``), several wordings per kind, deterministic given a seed;
- measures the distribution of option mentions in the completions (``option_mentions``), which
  the lab compares with the chat aggregate;
- offers four variants:
  - ``mentions="none"``: no completion mentions any option, and where the options are numbers
    no completion is a number at all (the numeric kinds give their turns to the others);
  - ``mentions="avoid"``: no completion mentions any option (an example that would is drawn
    again), numbers included. With numeric options this *steers* the numbers away from them,
    which teaches the model that answers lie outside the options: held-out chat valid mass
    fell from 0.52 to 0.13 on the toy, and from 0.49 at step 10 to 0.13 at step 30 on Gemma
    3 270M (docs/lab.md). It is kept to show that confound;
  - ``mentions="known"``: a share ``mention_rate`` of the completions mention exactly one
    option, drawn from a given ``mention_dist``; the rest as in ``avoid``;
  - ``mentions="natural"``: nothing filtered or placed: the options turn up as they do in any
    instruction data, letter counts and small sums, and the lab measures where.

An option is *mentioned* when it occurs as a whole word or number, case-insensitively: "1" is
mentioned by "1" and "1 2", not by "15"; "blue" by "Blue.", not by "bluebell".

>>> numbers = [str(i) for i in range(1, 11)]
>>> ex = generic_examples(400, seed=1, options=numbers, mentions="avoid")
>>> len(ex), sorted({e["kind"] for e in ex}) == sorted(KINDS)
(400, True)
>>> option_mentions([e["completion"] for e in ex], numbers)["share_with_mention"]
0.0
>>> sorted({e["kind"] for e in generic_examples(400, seed=1, options=numbers)})  # none: no number at all
['copy', 'lookup', 'reversal', 'spelling', 'yesno']
>>> known = generic_examples(400, seed=1, options=numbers, mentions="known", mention_rate=0.25)
>>> option_mentions([e["completion"] for e in known], numbers)["share_with_mention"]
0.25
>>> natural = generic_examples(400, seed=1, options=numbers, mentions="natural")
>>> round(option_mentions([e["completion"] for e in natural], numbers)["share_with_mention"], 2)
0.08
>>> option_mentions(["15", "1", "Blue."], ["1", "blue"])
{'counts': {'1': 1, 'blue': 1}, 'dist': [0.5, 0.5], 'share_with_mention': 0.6666666666666666, 'n': 3}
>>> rows = render(generic_examples(1, seed=0, kinds=("copy",)), lambda s: f"User: {s}\\nAssistant:")
>>> rows[0]["completion"].startswith(" ") and rows[0]["prompt"].startswith("User: ")
True
"""

from __future__ import annotations

import functools
import random
import re
from typing import Any, Callable, Iterable, Sequence

KINDS: tuple[str, ...] = (
    "arithmetic",
    "copy",
    "reversal",
    "counting",
    "conversion",
    "spelling",
    "yesno",
    "lookup",
)
MENTIONS = ("none", "avoid", "known", "natural")
NUMERIC_KINDS = ("arithmetic", "counting", "conversion")  # every completion a number
TRIES = 50  # fresh draws per kind before an example that must not mention an option gives up on that kind

# neutral words for copying, reversal, counting and spelling (no numbers, colours or animals)
WORDS: tuple[str, ...] = (
    "river", "stone", "garden", "letter", "window", "music", "table", "cloud", "bridge", "candle",
    "forest", "pencil", "mountain", "basket", "ladder", "island", "market", "blanket", "kitchen", "morning",
    "road", "lamp", "book", "door", "tree", "ship", "hill", "rain", "wind", "bread",
    "chair", "clock", "field", "glass", "house", "paper", "plate", "shell", "storm", "train",
    "village", "harbour", "lantern", "journey", "picture", "teacher", "weather", "library", "umbrella", "sandwich",
    "castle", "mirror", "pocket", "rocket", "silver", "summer", "winter", "button", "carpet", "engine",
    "butterfly", "adventure", "telephone", "newspaper", "chocolate", "waterfall", "breakfast", "playground",
)  # fmt: skip

# (big unit singular, plural, small unit singular, plural, small units per big unit)
UNITS: tuple[tuple[str, str, str, str, int], ...] = (
    ("metre", "metres", "centimetre", "centimetres", 100),
    ("kilometre", "kilometres", "metre", "metres", 1000),
    ("centimetre", "centimetres", "millimetre", "millimetres", 10),
    ("kilogram", "kilograms", "gram", "grams", 1000),
    ("litre", "litres", "millilitre", "millilitres", 1000),
    ("hour", "hours", "minute", "minutes", 60),
    ("minute", "minutes", "second", "seconds", 60),
    ("day", "days", "hour", "hours", 24),
    ("week", "weeks", "day", "days", 7),
    ("year", "years", "month", "months", 12),
)

PLUS = ("What is {a} plus {b}?", "Add {a} and {b}.", "What is the sum of {a} and {b}?", "What do {a} and {b} make?")
MINUS = ("What is {a} minus {b}?", "Subtract {b} from {a}.", "What is {a} take away {b}?", "Take {b} away from {a}.")
COPY_WORD = ("Repeat the word {w}.", "Say the word {w}.", "Write the word {w} again.", "Echo this word: {w}")
COPY_PHRASE = ("Repeat after me: {p}", "Copy this phrase exactly: {p}", "Say this back to me: {p}")
REVERSE_WORD = ("Spell the word {w} backwards.", "Write {w} backwards.", "Reverse the letters of {w}.")
REVERSE_LIST = ("Reverse the order of these words: {p}", "Say these words in reverse order: {p}")
COUNT_LETTERS = ("How many letters are in the word {w}?", "Count the letters in {w}.")
COUNT_PHRASE = ("How many letters are in the phrase {p}, not counting spaces?",)
COUNT_WORDS = ("How many words are in this list: {p}?", "Count the words in this list: {p}")
CONVERT = ("How many {small} are in {x} {big}?", "Convert {x} {big} to {small}.", "{x} {big} is how many {small}?")
SPELL_HYPHEN = ("Spell the word {w} with hyphens between the letters.", "Write {w} with a hyphen between each letter.")
SPELL_SPACE = ("Spell {w} letter by letter.", "Spell out {w}, one letter at a time.")
LOOKUP = {
    "capitals": ("What is the capital of {k}?", "Name the capital of {k}."),
    "colours": ("What colour is {k}?", "What is the colour of {k}?"),
    "sounds": ("What sound does a {k} make?", "What does a {k} say?"),
    "opposites": ("What is the opposite of {k}?", "Give the opposite of {k}."),
    "plurals": ("What is the plural of {k}?", "Give the plural of {k}."),
}
YESNO = {
    "capitals": ("Is {v} the capital of {k}?", "Is the capital of {k} {v}?"),
    "colours": ("Is {k} {v}?", "Is the colour of {k} {v}?"),
    "sounds": ("Does a {k} say {v}?", "Is {v} the sound a {k} makes?"),
    "opposites": ("Is {v} the opposite of {k}?", "Is the opposite of {k} {v}?"),
    "plurals": ("Is {v} the plural of {k}?", "Is the plural of {k} {v}?"),
}

Example = dict[str, str]
Maker = Callable[[random.Random], tuple[str, str]]


# ---------------------------------------------------------------------------------------------
# the fact table


@functools.cache
def load_facts() -> dict[str, dict[str, str]]:
    """The shipped fact table (``facts.yaml``): ``{section: {key: answer}}``, read once."""
    from importlib import resources

    import yaml

    text = resources.files("crystallab.lab").joinpath("facts.yaml").read_text(encoding="ascii")
    data = yaml.safe_load(text)
    out: dict[str, dict[str, str]] = {}
    for section, table in data.items():
        for k, v in table.items():
            if not isinstance(k, str) or not isinstance(v, str):  # YAML 1.1 reads bare yes/no/on/off as booleans
                raise ValueError(f"facts.yaml: {section}: {k!r}: {v!r} is not a pair of strings (quote it)")
        out[section] = dict(table)
    return out


def __getattr__(name: str) -> Any:  # FACTS is read from facts.yaml on first use
    if name == "FACTS":
        return load_facts()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# one example per kind: (instruction, completion)


def _words(rng: random.Random, k: int) -> list[str]:
    return rng.sample(WORDS, k)


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    if rng.random() < 0.5:
        return rng.choice(PLUS).format(a=a, b=b), str(a + b)
    a, b = max(a, b), min(a, b)
    return rng.choice(MINUS).format(a=a, b=b), str(a - b)


def _copy(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:
        w = rng.choice(WORDS)
        return rng.choice(COPY_WORD).format(w=w), w
    p = " ".join(_words(rng, rng.randint(2, 4)))
    return rng.choice(COPY_PHRASE).format(p=p), p


def _reversal(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:
        w = rng.choice(WORDS)
        return rng.choice(REVERSE_WORD).format(w=w), w[::-1]
    ws = _words(rng, rng.randint(3, 5))
    return rng.choice(REVERSE_LIST).format(p=", ".join(ws)), ", ".join(reversed(ws))


def _counting(rng: random.Random) -> tuple[str, str]:
    u = rng.random()
    if u < 1 / 3:
        w = rng.choice(WORDS)
        return rng.choice(COUNT_LETTERS).format(w=w), str(len(w))
    if u < 2 / 3:
        ws = _words(rng, rng.randint(2, 4))
        return rng.choice(COUNT_PHRASE).format(p=" ".join(ws)), str(sum(map(len, ws)))
    ws = _words(rng, rng.randint(3, 16))
    return rng.choice(COUNT_WORDS).format(p=", ".join(ws)), str(len(ws))


def _unit(x: int, singular: str, plural: str) -> str:
    return singular if x == 1 else plural


def _conversion(rng: random.Random) -> tuple[str, str]:
    big, bigs, _, smalls, f = rng.choice(UNITS)
    x = rng.randint(1, 12)
    ins = rng.choice(CONVERT).format(x=x, big=_unit(x, big, bigs), small=smalls)
    return ins[0].upper() + ins[1:], str(x * f)


def _spelling(rng: random.Random) -> tuple[str, str]:
    w = rng.choice(WORDS)
    if rng.random() < 0.5:
        return rng.choice(SPELL_HYPHEN).format(w=w), "-".join(w)
    return rng.choice(SPELL_SPACE).format(w=w), " ".join(w)


def _yesno(rng: random.Random) -> tuple[str, str]:
    facts = load_facts()
    section = rng.choice(sorted(YESNO))
    table = facts[section]
    k = rng.choice(sorted(table))
    truth = rng.random() < 0.5
    v = table[k] if truth else rng.choice(sorted({x for x in table.values() if x != table[k]}))
    ins = rng.choice(YESNO[section]).format(k=k, v=v)
    return ins[0].upper() + ins[1:], "yes" if truth else "no"


def _lookup(rng: random.Random) -> tuple[str, str]:
    section = rng.choice(sorted(LOOKUP))
    table = load_facts()[section]
    k = rng.choice(sorted(table))
    return rng.choice(LOOKUP[section]).format(k=k), table[k]


MAKERS: dict[str, Maker] = {
    "arithmetic": _arithmetic,
    "copy": _copy,
    "reversal": _reversal,
    "counting": _counting,
    "conversion": _conversion,
    "spelling": _spelling,
    "yesno": _yesno,
    "lookup": _lookup,
}


# ---------------------------------------------------------------------------------------------
# examples whose completion is one given option


def _mention_makers(opt: str, kinds: Sequence[str]) -> list[tuple[str, Maker]]:
    """Ways to build an example whose whole completion is ``opt``, within ``kinds``."""
    out: list[tuple[str, Maker]] = []
    numeric = opt.isascii() and opt.isdigit() and str(int(opt)) == opt
    if numeric:
        k = int(opt)

        def plus(rng: random.Random) -> tuple[str, str]:
            a = rng.randint(0, k)
            return rng.choice(PLUS).format(a=a, b=k - a), opt

        def minus(rng: random.Random) -> tuple[str, str]:
            b = rng.randint(1, 20)
            return rng.choice(MINUS).format(a=k + b, b=b), opt

        if "arithmetic" in kinds:
            out += [("arithmetic", plus), ("arithmetic", minus)]
        fit = [w for w in WORDS if len(w) == k]
        if "counting" in kinds and fit:
            out.append(("counting", lambda rng: (rng.choice(COUNT_LETTERS).format(w=rng.choice(fit)), opt)))
        if "counting" in kinds and 2 <= k <= 16:
            out.append(("counting", lambda rng: (rng.choice(COUNT_WORDS).format(p=", ".join(_words(rng, k))), opt)))
        units = [u for u in UNITS if k % u[4] == 0 and k // u[4] <= 12]
        if "conversion" in kinds and units:

            def convert(rng: random.Random) -> tuple[str, str]:
                big, bigs, _, smalls, f = rng.choice(units)
                x = k // f
                ins = rng.choice(CONVERT).format(x=x, big=_unit(x, big, bigs), small=smalls)
                return ins[0].upper() + ins[1:], opt

            out.append(("conversion", convert))
    if "lookup" in kinds:
        facts = load_facts()
        hits = [(s, k, v) for s in sorted(LOOKUP) for k, v in facts[s].items() if v.lower() == opt.lower()]
        if hits:

            def lookup(rng: random.Random) -> tuple[str, str]:
                s, k, v = rng.choice(hits)
                return rng.choice(LOOKUP[s]).format(k=k), v

            out.append(("lookup", lookup))
    if "copy" in kinds and (not numeric or not out):  # numbers as sums and counts, copied only as a last resort

        def copy(rng: random.Random) -> tuple[str, str]:
            return rng.choice(COPY_PHRASE if " " in opt else COPY_WORD).format(w=opt, p=opt), opt

        out.append(("copy", copy))
    return out


# ---------------------------------------------------------------------------------------------
# the data set


def _pattern(opt: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w])" + re.escape(opt) + r"(?![\w])", re.IGNORECASE)


def _any_pattern(options: Sequence[str]) -> re.Pattern[str] | None:
    if not options:
        return None
    alts = "|".join(re.escape(o) for o in sorted(set(options), key=len, reverse=True))
    return re.compile(r"(?<![\w])(?:" + alts + r")(?![\w])", re.IGNORECASE)


def _normalised(dist: Sequence[float] | None, k: int) -> list[float]:
    if dist is None:
        return [1.0 / k] * k
    d = [float(x) for x in dist]
    if len(d) != k:
        raise ValueError(f"mention_dist has {len(d)} entries for {k} options")
    if any(not x >= 0 for x in d) or sum(d) <= 0:
        raise ValueError("mention_dist must be non-negative with a positive sum")
    s = sum(d)
    return [x / s for x in d]


def generic_examples(
    n: int = 1200,
    seed: int = 0,
    options: Sequence[str] = (),
    mentions: str = "none",
    mention_dist: Sequence[float] | None = None,
    kinds: Sequence[str] = KINDS,
    mention_rate: float = 0.3,
) -> list[Example]:
    """``n`` deterministic examples ``{"kind", "instruction", "completion"}`` (completion without a
    leading space), the same for the same arguments.

    The kinds take turns, so each holds about ``n / len(kinds)`` examples. ``mentions="none"``:
    as ``avoid``, and with numeric ``options`` no completion is a number: the numeric kinds are
    left out (with no other kind, it raises). ``mentions="avoid"``:
    no completion mentions any of ``options`` (see ``option_mentions``); an example that does is
    drawn again with new operands, and a kind that cannot avoid them after ``TRIES`` draws gives
    its turn to another kind (counting does with the options 1..100: its answers stay under 41).
    ``mentions="known"``: ``round(mention_rate * n)`` examples have a completion that is exactly
    one option, drawn from ``mention_dist`` (aligned with ``options``; default uniform): numbers
    as sums, differences, counts or conversions, words as copies ("Repeat the word blue.") and
    as look-ups where the fact table has them; the others mention none. ``mentions="natural"``:
    every example as its kind makes it, options and all.
    """
    if mentions not in MENTIONS:
        raise ValueError(f"mentions must be one of {MENTIONS}, not {mentions!r}")
    unknown = [k for k in kinds if k not in MAKERS]
    if unknown or not kinds:
        raise ValueError(f"unknown kinds {unknown}; use some of {KINDS}")
    if n < 0 or not 0 <= mention_rate <= 1:
        raise ValueError("n must be >= 0 and mention_rate in [0, 1]")
    opts = [str(o) for o in options]
    if mention_dist is not None and mentions != "known":
        raise ValueError("mention_dist only applies to mentions='known'")
    rng = random.Random(seed)
    out: list[Example] = []
    if mentions == "known":
        if not opts:
            raise ValueError("mentions='known' needs options")
        dist = _normalised(mention_dist, len(opts))
        for i, o in enumerate(opts):
            inside = [p for j, p in enumerate(opts) if j != i and _pattern(p).search(o)]
            if inside:
                raise ValueError(f"option {o!r} mentions {inside[0]!r}: it can never be mentioned alone")
        makers = {o: _mention_makers(o, kinds) for o in opts}
        missing = [o for o, w, p in zip(opts, makers.values(), dist) if not w and p > 0]
        if missing:
            raise ValueError(f"no kind in {tuple(kinds)} can answer {missing[0]!r}; include 'copy' or 'arithmetic'")
        for j in rng.choices(range(len(opts)), weights=dist, k=round(mention_rate * n)):
            kind, make = rng.choice(makers[opts[j]])
            ins, comp = make(rng)
            out.append({"kind": kind, "instruction": ins, "completion": comp})
    avoid = None if mentions == "natural" else _any_pattern(opts)
    if mentions == "none" and opts and all(o.strip().isdigit() for o in opts):
        kinds = [k for k in kinds if k not in NUMERIC_KINDS]
        if not kinds:
            raise ValueError("mentions='none' with numeric options leaves no kind: add a non-numeric one")
        avoid = re.compile(r"\d")

    def draw(kind: str) -> Example | None:
        for _ in range(TRIES):
            ins, comp = MAKERS[kind](rng)
            if avoid is None or not avoid.search(comp):
                return {"kind": kind, "instruction": ins, "completion": comp}
        return None

    turns = list(dict.fromkeys(kinds))
    for turn in range(n - len(out)):
        own = turns[turn % len(turns)]
        ex = draw(own)
        if ex is None:  # the others, in turn from a random one, so no single kind takes the share
            others = [k for k in turns if k != own]
            r = rng.randrange(len(others)) if others else 0
            ex = next(filter(None, map(draw, others[r:] + others[:r])), None)
        if ex is None:
            raise ValueError(f"no kind in {tuple(turns)} builds a completion that avoids the options {opts}")
        out.append(ex)
    rng.shuffle(out)
    return out


def option_mentions(completions: Iterable[str], options: Sequence[str]) -> dict[str, Any]:
    """How often each option is mentioned (a whole word or number, any case) in ``completions``:
    ``{"counts": {option: n}, "dist": [share per option] or None (no mention), "share_with_mention":
    share of completions with at least one mention, "n": completions}``. A completion that
    mentions several options counts for each."""
    opts = [str(o) for o in options]
    pats = [_pattern(o) for o in opts]
    counts = dict.fromkeys(opts, 0)
    n = with_mention = 0
    for c in completions:
        n += 1
        hit = False
        for o, p in zip(opts, pats):
            if p.search(c):
                counts[o] += 1
                hit = True
        with_mention += hit
    total = sum(counts.values())
    return {
        "counts": counts,
        "dist": [counts[o] / total for o in opts] if total else None,
        "share_with_mention": with_mention / n if n else 0.0,
        "n": n,
    }


def render(examples: Iterable[Example], render_chat: Callable[[str], str]) -> list[dict[str, str]]:
    """TRL prompt/completion rows: the instruction in the model's chat format, then the answer
    after one space."""
    return [{"prompt": render_chat(e["instruction"]), "completion": " " + e["completion"]} for e in examples]
