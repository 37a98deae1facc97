"""Rendering a task's prompts: raw contexts as they are, chat instructions through the
checkpoint's chat template (or the plain ``User: ...\\nAssistant:`` one).

>>> from crystallab.suite import load_task
>>> ps = render_prompts(load_task("number_1_10"), "raw")
>>> ps[0].id, ps[0].kind, ps[0].family, ps[0].split
('raw-00', 'raw', 'qa', None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from crystallab.errors import UserError
from crystallab.suite import Task

PROMPT_SETS = ("raw", "chat", "all")


class ChatRenderer(Protocol):
    def render_chat(self, instruction: str) -> tuple[str, str]: ...


@dataclass(frozen=True)
class Prompt:
    id: str  # raw-NN (context NN) or chat-NN (instruction NN): stable within a task version
    kind: str  # raw | chat
    family: str  # the context's family, or the instruction's ("instruction" when the task has none)
    text: str  # what the model sees
    template: str | None = None  # chat prompts: "tokenizer" or "plain"
    split: str | None = None  # train | heldout (the task's mark, lab tasks), None when not split


def _round_robin(prompts: list[Prompt], limit: int | None) -> list[Prompt]:
    """``limit`` prompts taken one per family in turn (then in id order), so that a small limit
    still shows every kind of prompt; ``limit`` of each split where the prompts have several."""
    if limit is None:
        return prompts
    splits = sorted({p.split for p in prompts}, key=str)
    if len(splits) > 1:  # held-out prompts are where verdicts are read: never crowded out by train ones
        return sorted(
            (q for s in splits for q in _round_robin([p for p in prompts if p.split == s], limit)), key=lambda p: p.id
        )
    by_family: dict[str, list[Prompt]] = {}
    for p in prompts:
        by_family.setdefault(p.family, []).append(p)
    queues = list(by_family.values())
    picked = [q[r] for r in range(max(map(len, queues), default=0)) for q in queues if r < len(q)][:limit]
    return sorted(picked, key=lambda p: p.id)


def render_prompts(
    task: Task, which: str = "all", renderer: ChatRenderer | None = None, limit: int | None = None
) -> list[Prompt]:
    """The task's prompts of one set (raw, chat or all). ``limit`` keeps N of each kind (and of
    each split, train and held-out, in a task that marks them), taken round-robin over the
    families (contexts and instructions alike) so that a small limit still shows the repertoire."""
    if which not in PROMPT_SETS:
        raise UserError(f"unknown prompt set '{which}'; use raw, chat or all")
    out: list[Prompt] = []
    if which in ("raw", "all"):
        out += _round_robin(
            [Prompt(f"raw-{i:02d}", "raw", c.family, c.text, split=c.split) for i, c in enumerate(task.contexts)], limit
        )
    if which in ("chat", "all"):
        if renderer is None:
            raise ValueError("chat prompts need a renderer (the model's chat template)")
        # pick first (by family), render after: only the kept instructions go through the template
        keep = _round_robin(
            [
                Prompt(f"chat-{i:02d}", "chat", ins.family, ins.text, split=ins.split)
                for i, ins in enumerate(task.instructions)
            ],
            limit,
        )
        for p in keep:
            text, template = renderer.render_chat(p.text)
            out.append(Prompt(p.id, "chat", p.family, text, template, p.split))
    return out
