"""Built-in task files and the task loader's validation."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import pytest
import yaml

from crystallab.errors import TaskError, UserError
from crystallab.suite import BUILTIN_DIR, Instruction, Task, TaskWarning, load_task, load_task_file, task_ids

REQUIRED_IDS = {
    "number_1_10",
    "number_0_10",
    "number_1_100",
    "die_d6",
    "coin_flip",
    "letter_a_z",
    "color",
    "animal",
    "fruit",
    "country",
    "us_state",
    "first_name",
    "weekday",
    "month",
    "card_suit",
    "rock_paper_scissors",
    "word",
}
FAMILIES = {"qa", "list", "narrative", "dialogue", "code", "game", "form", "poll"}
CHAT_FAMILIES = {"plain", "game", "code", "person", "story", "form"}
ALL_IDS = task_ids()
BUILTIN_IDS = [i for i in ALL_IDS if not load_task(i).is_open]  # the closed tasks (open ones: test_open_tasks.py)
# the loader's own small tasks have one family of each kind: the warning is tested on its own below
pytestmark = pytest.mark.filterwarnings("ignore::crystallab.suite.TaskWarning")


# ---------------------------------------------------------------------------------------------
# helpers


def word_prefix_conflicts(task: Task) -> list[tuple[str, str, str, str]]:
    """Pairs of forms of *different* options where one is a word-prefix of the other.

    A form ``a`` is a word-prefix of ``b`` when ``b`` starts with ``a`` (case-insensitively unless
    the task is case-sensitive) and the next character of ``b`` is not a letter or digit, e.g.
    ``Guinea`` / ``Guinea-Bissau`` or ``New`` / ``New York``. The parser takes the first surface
    form at the start of an answer followed by a non-alphanumeric character, so such a pair would
    make the answer ambiguous. ``grape`` / ``grapefruit`` is fine: ``f`` is a letter.
    Returns ``(label_a, form_a, label_b, form_b)`` tuples.
    """

    def norm(s: str) -> str:
        return s if task.case_sensitive else s.casefold()

    conflicts = []
    for a, b in itertools.permutations(task.options, 2):
        for fa in a.forms:
            for fb in b.forms:
                na, nb = norm(fa), norm(fb)
                if len(nb) > len(na) and nb.startswith(na) and not nb[len(na)].isalnum():
                    conflicts.append((a.label, fa, b.label, fb))
    return conflicts


def _task(options, case_sensitive: bool = False) -> Task:
    from crystallab.suite import task_from_dict

    data = {
        "id": "t",
        "version": 1,
        "options": options,
        "parser": {"case_sensitive": case_sensitive},
        "instructions": ["Pick one."],
        "contexts": [{"family": "qa", "text": "Q: Pick one.\nA:"}],
    }
    return task_from_dict(data, "t.yaml")


def test_word_prefix_helper_flags_real_conflicts():
    assert word_prefix_conflicts(_task([{"label": "Guinea"}, {"label": "Guinea-Bissau"}]))
    assert word_prefix_conflicts(_task([{"label": "new"}, {"label": "new york", "forms": ["New York"]}]))
    assert word_prefix_conflicts(_task([{"label": "korea"}, {"label": "north", "forms": ["Korea, North"]}]))
    # case-insensitive by default, exact when case_sensitive is true
    assert word_prefix_conflicts(_task([{"label": "NEW"}, {"label": "new york"}]))
    assert not word_prefix_conflicts(_task([{"label": "NEW"}, {"label": "new york"}], case_sensitive=True))


def test_word_prefix_helper_allows_letter_continuations_and_same_option():
    assert not word_prefix_conflicts(_task([{"label": "grape"}, {"label": "grapefruit"}]))
    assert not word_prefix_conflicts(_task([{"label": "1"}, {"label": "10"}, {"label": "100"}]))
    assert not word_prefix_conflicts(_task([{"label": "heads", "forms": ["head", "Heads"]}, {"label": "tails"}]))
    assert not word_prefix_conflicts(_task([{"label": "us", "forms": ["U.S.", "U.S.A."]}, {"label": "uk"}]))


# ---------------------------------------------------------------------------------------------
# the built-in tasks


def test_required_builtin_ids_present():
    missing = REQUIRED_IDS - set(BUILTIN_IDS)
    assert not missing, f"missing built-in tasks: {sorted(missing)}"


def test_every_builtin_file_is_listed():
    assert sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml")) == ALL_IDS


@pytest.mark.parametrize("task_id", BUILTIN_IDS)
def test_builtin_task_loads(task_id):
    task = load_task(task_id)
    assert task.id == task_id
    assert task.version >= 1
    assert task.description.strip() and "\n" not in task.description.strip()
    assert Path(task.source).name == f"{task_id}.yaml"
    assert task.leading_space == "both"
    assert not task.case_sensitive


@pytest.mark.parametrize("task_id", BUILTIN_IDS)
def test_builtin_task_sizes(task_id):
    """The v2 rules: >= 3 contexts in each of >= 6 raw families, >= 3 paraphrases in each of
    >= 5 chat families (the loader enforces the family sizes; the totals are the suite's own)."""
    task = load_task(task_id)
    assert task.version >= 2
    assert len(task.options) >= 2
    assert not task.family_problems()
    sizes = task.family_sizes()
    assert min(sizes["raw"].values()) >= 3 and len(sizes["raw"]) >= 6, sizes["raw"]
    assert min(sizes["chat"].values()) >= 3 and len(sizes["chat"]) >= 5, sizes["chat"]
    assert len(task.instructions) >= 15 and len(task.contexts) >= 20
    assert len(set(task.instruction_texts)) == len(task.instructions)


@pytest.mark.parametrize("task_id", BUILTIN_IDS)
def test_builtin_families_are_known(task_id):
    task = load_task(task_id)
    unknown = {c.family for c in task.contexts} - FAMILIES
    assert not unknown, f"unknown context families {sorted(unknown)}"
    unknown = set(task.chat_families) - CHAT_FAMILIES
    assert not unknown, f"unknown chat families {sorted(unknown)}"
    assert "plain" in task.chat_families


@pytest.mark.parametrize("task_id", BUILTIN_IDS)
def test_builtin_labels_unique(task_id):
    task = load_task(task_id)
    assert len(set(task.labels)) == len(task.labels)
    folded = [lab.casefold() for lab in task.labels]
    assert len(set(folded)) == len(folded), "labels differ only by case"


@pytest.mark.parametrize("task_id", BUILTIN_IDS)
def test_builtin_forms_clean_and_disjoint(task_id):
    task = load_task(task_id)
    owner: dict[str, str] = {}
    for opt in task.options:
        assert opt.forms[0] == opt.label
        for form in opt.forms:
            assert form == form.strip() and form, f"form {form!r} of {opt.label!r} has surrounding whitespace"
            key = form if task.case_sensitive else form.casefold()
            assert owner.setdefault(key, opt.label) == opt.label, (
                f"form {form!r} shared by {owner[key]!r} and {opt.label!r}"
            )
    conflicts = word_prefix_conflicts(task)
    assert not conflicts, f"word-prefix conflicts between options: {conflicts[:5]}"


@pytest.mark.parametrize("task_id", BUILTIN_IDS)
def test_builtin_contexts_are_raw_prompts(task_id):
    task = load_task(task_id)
    for c in task.contexts:
        assert c.text.strip(), "empty context"
        # the answer (with or without its leading space) follows directly: a trailing space would
        # split the answer's first token
        assert not c.text.endswith(" "), f"context ends in a space: {c.text!r}"


def test_closed_set_sizes():
    sizes = {
        "number_1_10": 10,
        "number_0_10": 11,
        "number_1_100": 100,
        "die_d6": 6,
        "coin_flip": 2,
        "letter_a_z": 26,
        "weekday": 7,
        "month": 12,
        "card_suit": 4,
        "rock_paper_scissors": 3,
        "us_state": 50,
    }
    for task_id, n in sizes.items():
        assert len(load_task(task_id).options) == n, task_id
    assert load_task("coin_flip").labels == ("heads", "tails")
    assert load_task("number_1_100").labels == tuple(str(i) for i in range(1, 101))
    assert load_task("number_0_10").labels == tuple(str(i) for i in range(0, 11))
    assert load_task("letter_a_z").labels == tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    for task_id, lo, hi in (
        ("color", 10, 14),
        ("animal", 25, 40),
        ("fruit", 20, 30),
        ("country", 45, 55),
        ("first_name", 35, 45),
        ("word", 35, 45),
    ):
        assert lo <= len(load_task(task_id).options) <= hi, task_id


def test_number_1_100_has_digits_only():
    for opt in load_task("number_1_100").options:
        assert opt.forms == (opt.label,) and opt.label.isdigit()


def test_month_may_has_a_single_form():
    month = load_task("month")
    may = next(o for o in month.options if o.label == "may")
    assert {f.casefold() for f in may.forms} == {"may"}  # no "May" abbreviation clash


# ---------------------------------------------------------------------------------------------
# loader validation


VALID = {
    "id": "tiny",
    "version": 1,
    "description": "A tiny task.",
    "leading_space": "both",
    "options": [{"label": "heads", "forms": ["Heads"]}, {"label": "tails", "forms": ["Tails"]}],
    "parser": {"case_sensitive": False},
    "instructions": ["Flip a coin."],
    "contexts": [{"family": "qa", "text": "Q: Flip a coin.\nA:"}],
}


def _write(tmp_path: Path, data, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    return path


_DROP = object()


def _variant(**changes):
    """VALID with some top-level keys replaced (or dropped with ``_DROP``)."""
    data = dict(VALID)
    for key, value in changes.items():
        if value is _DROP:
            data.pop(key)
        else:
            data[key] = value
    return data


def test_valid_minimal_task_loads(tmp_path):
    task = load_task_file(_write(tmp_path, VALID))
    assert task.labels == ("heads", "tails")
    assert task.options[0].forms == ("heads", "Heads")
    assert task.source == str(tmp_path / "tiny.yaml")


def test_malformed_yaml(tmp_path):
    path = _write(tmp_path, "id: tiny\nversion: 1\noptions: [heads, tails\ninstructions:\n  - Flip.\n")
    with pytest.raises(TaskError) as exc:
        load_task_file(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert "malformed YAML" in msg
    assert "line" in msg


def test_unknown_key_suggests_close_key(tmp_path):
    data = _variant(options=_DROP)
    data["optons"] = VALID["options"]
    path = _write(tmp_path, data)
    with pytest.raises(TaskError) as exc:
        load_task_file(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert "optons" in msg
    assert "did you mean 'options'" in msg


def test_unknown_nested_key_names_the_field(tmp_path):
    path = _write(tmp_path, _variant(options=[{"label": "heads", "froms": ["Heads"]}, {"label": "tails"}]))
    with pytest.raises(TaskError) as exc:
        load_task_file(path)
    msg = str(exc.value)
    assert str(path) in msg and "options[0].froms" in msg and "'forms'" in msg


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"version": "one"}, "version", "positive integer"),
        ({"version": 0}, "version", "positive integer"),
        ({"leading_space": "sometimes"}, "leading_space", "expected one of"),
        ({"parser": {"case_sensitive": "no please"}}, "parser.case_sensitive", "true or false"),
        ({"instructions": "Flip a coin."}, "instructions", "expected a list"),
        ({"options": []}, "options", "must not be empty"),
        ({"options": [{"label": "heads"}]}, "options", "at least 2 options"),
        ({"options": [{"label": "heads"}, {"label": "heads"}]}, "options[1].label", "duplicate option"),
        (
            {"options": [{"label": "heads", "forms": ["H"]}, {"label": "tails", "forms": ["h"]}]},
            "options[1].forms",
            "also a form of option",
        ),
        ({"options": [{"label": "heads", "forms": [" Heads"]}, {"label": "tails"}]}, "options[0].forms", "whitespace"),
        ({"contexts": [{"family": "qa"}]}, "contexts[0].text", "missing"),
        ({"contexts": [{"family": "qa", "text": ""}]}, "contexts[0].text", "must not be empty"),
        ({"instructions": [["nested"]]}, "instructions[0]", "expected a string"),
        ({"id": "Tiny Task"}, "id", "lowercase"),
        ({"instructions": _DROP}, "instructions", "missing"),
    ],
)
def test_invalid_task_names_file_and_field(tmp_path, changes, field, fragment):
    path = _write(tmp_path, _variant(**changes))
    with pytest.raises(TaskError) as exc:
        load_task_file(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert f"'{field}'" in msg, msg
    assert fragment in msg, msg


def test_id_must_match_file_name(tmp_path):
    path = _write(tmp_path, VALID, name="other.yaml")
    with pytest.raises(TaskError) as exc:
        load_task_file(path)
    assert str(path) in str(exc.value) and "'id'" in str(exc.value)


def test_shared_form_is_case_sensitive_when_asked(tmp_path):
    data = _variant(
        options=[{"label": "heads", "forms": ["H"]}, {"label": "tails", "forms": ["h"]}],
        parser={"case_sensitive": True},
    )
    task = load_task_file(_write(tmp_path, data))
    assert task.case_sensitive and task.options[1].forms == ("tails", "h")


def test_task_error_is_a_user_error():
    assert issubclass(TaskError, UserError)


# ---------------------------------------------------------------------------------------------
# user task directories


def test_user_tasks_dir_overrides_and_extends(tmp_path):
    override = _variant(id="coin_flip", options=[{"label": "up"}, {"label": "down"}])
    over_path = _write(tmp_path, override, name="coin_flip.yaml")
    _write(tmp_path, _variant(id="my_task"), name="my_task.yaml")
    _write(tmp_path, _variant(id="yml_task"), name="yml_task.yml")

    ids = task_ids(tmp_path)
    assert {"my_task", "yml_task"} <= set(ids)
    assert set(BUILTIN_IDS) <= set(ids)
    assert "my_task" not in task_ids()

    mine = load_task("coin_flip", tasks_dir=tmp_path)
    assert mine.labels == ("up", "down")
    assert mine.source == str(over_path)
    assert load_task("coin_flip").labels == ("heads", "tails")  # the built-in is untouched
    assert load_task("my_task", tasks_dir=tmp_path).labels == ("heads", "tails")
    assert load_task("yml_task", tasks_dir=tmp_path).id == "yml_task"
    assert load_task("number_1_10", tasks_dir=tmp_path).id == "number_1_10"  # built-ins still reachable


def test_user_tasks_dir_invalid_file_reports_path(tmp_path):
    path = _write(tmp_path, _variant(id="broken", version="one"), name="broken.yaml")
    with pytest.raises(TaskError) as exc:
        load_task("broken", tasks_dir=tmp_path)
    assert str(path) in str(exc.value) and "'version'" in str(exc.value)


def test_unknown_task_and_bad_dir(tmp_path):
    with pytest.raises(UserError, match="did you mean 'coin_flip'"):
        load_task("coin_flp")
    with pytest.raises(UserError, match="not a directory"):
        task_ids(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------
# families (SCIENCE.md "Objects": >= 3 contexts per raw family, >= 5 chat families of >= 3)


def _families_task(raw: dict[str, int], chat: dict[str, int], task_id: str = "fam") -> dict:
    """VALID with ``raw`` contexts and ``chat`` instructions per family."""
    return _variant(
        id=task_id,
        contexts=[{"family": f, "text": f"{f} context {i}:"} for f, n in raw.items() for i in range(n)],
        instructions=[{"family": f, "text": f"{f} instruction {i}."} for f, n in chat.items() for i in range(n)],
    )


GOOD_RAW = {"qa": 3, "list": 3}
GOOD_CHAT = {"plain": 3, "game": 3, "code": 3, "person": 3, "story": 3}


def test_instruction_families_load_and_plain_strings_are_one_family(tmp_path):
    task = load_task_file(_write(tmp_path, _families_task(GOOD_RAW, GOOD_CHAT), "fam.yaml"))
    assert task.instructions[0] == Instruction("plain", "plain instruction 0.")
    assert task.chat_families == ("code", "game", "person", "plain", "story")
    assert task.family_sizes() == {"raw": GOOD_RAW, "chat": GOOD_CHAT}
    assert task.to_json()["instructions"][3] == {"family": "game", "text": "game instruction 0."}
    old = load_task_file(_write(tmp_path, _variant(instructions=["Flip a coin.", "Toss a coin."])))
    assert old.instructions == (Instruction("instruction", "Flip a coin."), Instruction("instruction", "Toss a coin."))
    assert old.instruction_texts == ("Flip a coin.", "Toss a coin.") and old.chat_families == ("instruction",)


@pytest.mark.parametrize(
    ("instructions", "field", "fragment"),
    [
        ([{"family": "plain"}], "instructions[0].text", "missing"),
        ([{"text": "Flip."}], "instructions[0].family", "missing"),
        ([{"family": "plain", "text": "Flip.", "mood": "x"}], "instructions[0].mood", "unknown key"),
        ([{"family": "", "text": "Flip."}], "instructions[0].family", "must not be empty"),
        (["Flip.", {"family": "plain", "text": "Flip."}], "instructions", "duplicate instruction"),
    ],
)
def test_bad_instruction_entries_name_the_field(tmp_path, instructions, field, fragment):
    path = _write(tmp_path, _variant(instructions=instructions))
    with pytest.raises(TaskError) as exc:
        load_task_file(path)
    assert str(path) in str(exc.value) and f"'{field}'" in str(exc.value) and fragment in str(exc.value)


@pytest.mark.parametrize(
    ("raw", "chat", "fragment"),
    [
        ({"qa": 3, "list": 2}, GOOD_CHAT, "raw family 'list' has 2 contexts; a family needs at least 3"),
        (
            GOOD_RAW,
            {k: v for k, v in list(GOOD_CHAT.items())[:4]},
            "4 chat families (plain, game, code, person); a task needs at least 5",
        ),
        (GOOD_RAW, {**GOOD_CHAT, "story": 2}, "chat family 'story' has 2 paraphrases; a family needs at least 3"),
    ],
)
def test_family_sizes_refuse_a_builtin_and_warn_a_user_task(tmp_path, monkeypatch, raw, chat, fragment):
    import crystallab.suite as tasks_mod

    # a built-in task: one line naming the file and the family
    builtin = tmp_path / "builtin"
    builtin.mkdir()
    path = _write(builtin, _families_task(raw, chat), "fam.yaml")
    monkeypatch.setattr(tasks_mod, "BUILTIN_DIR", builtin)
    with pytest.raises(TaskError) as exc:
        load_task_file(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: field ") and fragment in msg and "\n" not in msg
    monkeypatch.undo()

    # a user task: loads, with one warning line, once per task
    user = tmp_path / "user"
    user.mkdir()
    path = _write(user, _families_task(raw, chat), "fam.yaml")
    with pytest.warns(TaskWarning) as rec:
        task = load_task_file(path)
        load_task_file(path)
    assert task.id == "fam" and len(rec) == 1
    msg = str(rec[0].message)
    assert str(path) in msg and fragment in msg and "\n" not in msg


def test_good_family_sizes_do_not_warn(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a TaskWarning would fail the test here
        task = load_task_file(_write(tmp_path, _families_task(GOOD_RAW, GOOD_CHAT), "fam.yaml"))
    assert not task.family_problems()


def test_a_user_task_without_families_warns_once_with_every_problem_counted(tmp_path):
    path = _write(tmp_path, VALID)
    with pytest.warns(TaskWarning) as rec:
        load_task("tiny", tasks_dir=tmp_path)
        load_task("tiny", tasks_dir=tmp_path)
    assert len(rec) == 1
    assert "raw family 'qa' has 1 context;" in str(rec[0].message) and "(and 2 more)" in str(rec[0].message)
    assert str(path) in str(rec[0].message)


class _Renderer:
    def render_chat(self, instruction: str) -> tuple[str, str]:
        return f"User: {instruction}\nAssistant:", "plain"


def test_chat_prompts_carry_their_instruction_family():
    from crystallab.prompts import render_prompts

    task = load_task("number_1_10")
    chat = render_prompts(task, "chat", _Renderer())
    assert [p.family for p in chat] == [i.family for i in task.instructions]
    assert [p.text for p in chat] == [f"User: {t}\nAssistant:" for t in task.instruction_texts]
    assert {p.kind for p in chat} == {"chat"} and {p.split for p in chat} == {None}
    # a small limit takes one instruction per family in turn, like the raw contexts
    few = render_prompts(task, "chat", _Renderer(), limit=len(task.chat_families))
    assert sorted(p.family for p in few) == sorted(task.chat_families)
    assert [p.id for p in few] == sorted(p.id for p in few)


def test_a_limit_keeps_held_out_prompts_in_a_split_task():
    """A round-robin over families alone would fill a small limit with each family's first
    (train) prompts and leave the held-out ensemble, where verdicts are read, empty."""
    from crystallab.lab.universe import split_task
    from crystallab.prompts import render_prompts
    from crystallab.suite import task_from_dict

    task = task_from_dict(split_task(load_task("number_1_10").to_json()))
    for kind in ("raw", "chat"):
        every = render_prompts(task, kind, _Renderer())
        few = render_prompts(task, kind, _Renderer(), limit=8)
        held = [p for p in every if p.split == "heldout"]
        assert 0 < len(held) < len(every)
        by_split = {s: [p for p in few if p.split == s] for s in ("train", "heldout")}
        assert len(by_split["train"]) == 8 and len(by_split["heldout"]) == min(8, len(held))
        assert len({p.family for p in by_split["heldout"]}) == min(8, len({p.family for p in held}))


def test_builtin_chat_and_raw_families_mirror():
    """Every built-in task has the plain, game, code and person framings in chat, and the raw
    families they mirror (qa, game, code, poll)."""
    for task_id in BUILTIN_IDS:
        task = load_task(task_id)
        assert {"plain", "game", "code", "person"} <= set(task.chat_families), task_id
        assert {"qa", "game", "code", "poll"} <= set(task.families), task_id


# ---------------------------------------------------------------------------------------------
# the results schema: split and replica


def test_split_and_replica_round_trip_through_a_measurement(tiny_ckpt, tmp_path):
    import dataclasses

    import pyarrow.parquet as pq

    from crystallab.measuring import MeasureConfig, MeasureSettings, measure_into, run_measure
    from crystallab.models.hf import load_backend
    from crystallab.prompts import render_prompts
    from crystallab.store import FORMAT_VERSION, SCHEMA, ResultStore, read_table

    assert {"split", "replica"} <= set(SCHEMA.names) and FORMAT_VERSION == 2
    model = str(tiny_ckpt("llama", "digits", chat_template=True))
    backend = load_backend(model)
    out = tmp_path / "run"
    cfg = MeasureConfig(
        model=model,
        tasks=["coin_flip"],
        out=str(out),
        label="base",
        replica=3,
        progress=False,
        settings=MeasureSettings(limit=2),
    )
    run_measure(cfg, backend=backend, log=lambda s: None)
    rows = read_table(out).to_pylist()
    assert rows and {r["replica"] for r in rows} == {3} and {r["split"] for r in rows} == {None}
    chat = {r["prompt_family"] for r in rows if r["prompt_kind"] == "chat"}
    assert chat and chat <= set(load_task("coin_flip").chat_families)

    # the lab marks prompts train / heldout: the split reaches the rows; another replica of the
    # same checkpoint is a new group (resume does not skip it)
    task = load_task("coin_flip")
    prompts = [
        dataclasses.replace(p, split="heldout" if i % 2 else "train")
        for i, p in enumerate(render_prompts(task, "raw", None, 2))
    ]
    store = ResultStore(out)
    cfg4 = dataclasses.replace(cfg, replica=4, settings=dataclasses.replace(cfg.settings, prompts="raw"))
    res = measure_into(store, cfg4, backend, [task], {task.id: prompts}, "base", 0, log=lambda s: None)
    assert res["throughput"]["prompts"] == 2 and res["throughput"]["skipped_prompts"] == 0
    t = pq.read_table(out / "shards").to_pylist()
    split = {(r["prompt_id"], r["split"]) for r in t if r["replica"] == 4}
    assert split == {(prompts[0].id, "train"), (prompts[1].id, "heldout")}
    again = measure_into(store, cfg4, backend, [task], {task.id: prompts}, "base", 0, log=lambda s: None)
    assert again["throughput"]["skipped_prompts"] == 2  # resume still works, per replica
    assert store.consolidate().schema.equals(SCHEMA)


def test_a_format_1_folder_is_refused_with_one_line(tmp_path):
    import json

    from crystallab.store import ResultStore

    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "checkpoints": [], "tasks": {}, "runs": []}))
    with pytest.raises(UserError) as exc:
        ResultStore(tmp_path)
    msg = str(exc.value)
    assert "format 1" in msg and "new --out" in msg and "\n" not in msg


def test_tasks_cli_shows_raw_and_chat_families(capsys, tmp_path):
    import json

    from crystallab.cli.main import main

    assert main(["tasks", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    coin = load_task("coin_flip")
    assert rows["coin_flip"]["family_sizes"] == coin.family_sizes()
    assert rows["coin_flip"]["chat_families"] == len(coin.chat_families) and rows["coin_flip"]["families"] == len(
        coin.families
    )
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "chat fam." in out and "raw:  qa 3, list 3" in out and "chat: plain 3, game 3" in out
    # one task: its JSON is a task file again (the families ride on each prompt)
    assert main(["tasks", "coin_flip", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"family", "text"} == set(data["instructions"][0])
    path = tmp_path / "coin_flip.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert load_task_file(path).instructions == coin.instructions
