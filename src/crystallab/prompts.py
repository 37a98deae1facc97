"""Rendering a task's prompts: raw contexts as they are, chat instructions through the
checkpoint's chat template (or the plain ``User: ...\\nAssistant:`` one).

>>> from crystallab.tasks import load_task
>>> ps = render_prompts(load_task("number_1_10"), "raw")
>>> ps[0].id, ps[0].kind, ps[0].family
('raw-00', 'raw', 'qa')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from crystallab.errors import UserError
from crystallab.tasks import Task

PROMPT_SETS = ("raw", "chat", "all")


class ChatRenderer(Protocol):
    def render_chat(self, instruction: str) -> tuple[str, str]: ...


@dataclass(frozen=True)
class Prompt:
    id: str  # raw-NN (context NN) or chat-NN (instruction NN): stable within a task version
    kind: str  # raw | chat
    family: str  # the context's family, or "instruction"
    text: str  # what the model sees
    template: str | None = None  # chat prompts: "tokenizer" or "plain"


def render_prompts(task: Task, which: str = "all", renderer: ChatRenderer | None = None, limit: int | None = None) -> list[Prompt]:
    """The task's prompts of one set (raw, chat or all). ``limit`` keeps N of each kind: the first
    N instructions, and N contexts taken round-robin over the families so that a small limit
    still shows the repertoire."""
    if which not in PROMPT_SETS:
        raise UserError(f"unknown prompt set '{which}'; use raw, chat or all")
    out: list[Prompt] = []
    if which in ("raw", "all"):
        raw = [Prompt(f"raw-{i:02d}", "raw", c.family, c.text) for i, c in enumerate(task.contexts)]
        if limit is not None:
            by_family: dict[str, list[Prompt]] = {}
            for p in raw:
                by_family.setdefault(p.family, []).append(p)
            queues = list(by_family.values())
            picked = [q[r] for r in range(max(map(len, queues))) for q in queues if r < len(q)][:limit]
            raw = sorted(picked, key=lambda p: p.id)
        out += raw
    if which in ("chat", "all"):
        if renderer is None:
            raise ValueError("chat prompts need a renderer (the model's chat template)")
        for i, ins in enumerate(task.instructions[:limit]):
            text, template = renderer.render_chat(ins)
            out.append(Prompt(f"chat-{i:02d}", "chat", "instruction", text, template))
    return out
