"""The built-in open-ended tasks (kind: open) and the open-task schema's validation."""

from __future__ import annotations

import pytest

from crystallab.errors import TaskError
from crystallab.suite import load_task, task_from_dict, task_ids

OPEN_IDS = ["animal_reason", "fantasy_name", "haiku_topic", "joke", "made_up_word", "story_opening"]


def test_the_six_open_tasks_are_built_in():
    assert sorted(i for i in task_ids() if load_task(i).is_open) == OPEN_IDS


@pytest.mark.parametrize("task_id", OPEN_IDS)
def test_open_task_shape(task_id):
    t = load_task(task_id)
    assert t.kind == "open" and t.options == () and t.labels == ()
    assert t.stop_at in ("line", "sentence") and 1 <= t.max_tokens <= 64
    assert t.family_problems() == []  # ≥ 3 contexts per raw family, ≥ 5 chat families of ≥ 3
    assert len(t.families) >= 4
    assert task_from_dict(t.to_json(), t.source) == t


def test_all_means_the_closed_tasks():
    from crystallab.suite import load_tasks

    ids = [t.id for t in load_tasks("all")]
    assert "joke" not in ids and "color" in ids


BASE = {
    "id": "o",
    "version": 1,
    "kind": "open",
    "instructions": [{"family": "plain", "text": "Say something."}],
    "contexts": [{"family": "qa", "text": "Q: x\nA:"}],
}


@pytest.mark.parametrize(
    "change, where, message",
    [
        ({"options": ["a", "b"]}, "options", "no option list"),
        ({"parser": {"case_sensitive": True}}, "parser", "no option list"),
        ({"leading_space": "never"}, "leading_space", "no option list"),
        ({"kind": "closed_set"}, "kind", "expected closed or open"),
        ({"stop": {"at": "paragraph"}}, "stop.at", "expected one of line, sentence, phrase, word"),
        ({"stop": {"max_tokens": 0}}, "stop.max_tokens", "from 1 to 512"),
        ({"stop": {"max_tokens": 600}}, "stop.max_tokens", "from 1 to 512"),
        ({"stop": {"max_tokens": "x"}}, "stop.max_tokens", "from 1 to 512"),
        ({"stop": {"max_tokens": True}}, "stop.max_tokens", "from 1 to 512"),
        ({"stop": {"att": "line"}}, "stop.att", "did you mean 'at'"),
        ({"stop": "line"}, "stop", "expected a mapping"),
    ],
)
def test_open_task_validation_is_one_line(change, where, message):
    with pytest.raises(TaskError) as err:
        task_from_dict({**BASE, **change}, "t.yaml")
    text = str(err.value)
    assert text.startswith(f"t.yaml: field '{where}'") and message in text and "\n" not in text


def test_a_closed_task_has_no_stop_rule():
    closed = {"id": "c", "version": 1, "options": ["a", "b"], "instructions": ["x"], "contexts": BASE["contexts"]}
    task_from_dict(closed, "c.yaml")
    with pytest.raises(TaskError, match="field 'stop': only an open task"):
        task_from_dict({**closed, "stop": {"at": "line"}}, "c.yaml")
