"""Built-in task files and the task loader's validation."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from crystallab.errors import TaskError, UserError
from crystallab.tasks import BUILTIN_DIR, Task, load_task, load_task_file, task_ids

REQUIRED_IDS = {
    "number_1_10", "number_0_10", "number_1_100", "die_d6", "coin_flip", "letter_a_z", "color", "animal", "fruit",
    "country", "us_state", "first_name", "weekday", "month", "card_suit", "rock_paper_scissors", "word",
}
FAMILIES = {"qa", "list", "narrative", "dialogue", "code", "game", "form", "poll"}
BUILTIN_IDS = task_ids()


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
    from crystallab.tasks import task_from_dict

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
    assert sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml")) == BUILTIN_IDS


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
    task = load_task(task_id)
    assert len(task.options) >= 2
    assert len(task.instructions) >= 10, "need at least 10 instruction paraphrases"
    assert len(set(task.instructions)) == len(task.instructions)
    assert len(task.contexts) >= 20, "need at least 20 raw contexts"
    assert len(task.families) >= 6, f"need at least 6 context families, got {task.families}"


@pytest.mark.parametrize("task_id", BUILTIN_IDS)
def test_builtin_context_families_are_known(task_id):
    task = load_task(task_id)
    unknown = {c.family for c in task.contexts} - FAMILIES
    assert not unknown, f"unknown context families {sorted(unknown)}"


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
            assert owner.setdefault(key, opt.label) == opt.label, f"form {form!r} shared by {owner[key]!r} and {opt.label!r}"
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
        "number_1_10": 10, "number_0_10": 11, "number_1_100": 100, "die_d6": 6, "coin_flip": 2, "letter_a_z": 26,
        "weekday": 7, "month": 12, "card_suit": 4, "rock_paper_scissors": 3, "us_state": 50,
    }
    for task_id, n in sizes.items():
        assert len(load_task(task_id).options) == n, task_id
    assert load_task("coin_flip").labels == ("heads", "tails")
    assert load_task("number_1_100").labels == tuple(str(i) for i in range(1, 101))
    assert load_task("number_0_10").labels == tuple(str(i) for i in range(0, 11))
    assert load_task("letter_a_z").labels == tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    for task_id, lo, hi in (("color", 10, 14), ("animal", 25, 40), ("fruit", 20, 30), ("country", 45, 55),
                            ("first_name", 35, 45), ("word", 35, 45)):
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
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
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
        ({"options": [{"label": "heads", "forms": ["H"]}, {"label": "tails", "forms": ["h"]}]}, "options[1].forms", "also a form of option"),
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
