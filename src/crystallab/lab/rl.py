"""RL (TRL's GRPOTrainer) and preference tuning (TRL's DPOTrainer) for any causal LM.

Reward functions are plain functions of the completions (TRL's signature), built for a task:

- ``validity``: 1 when the completion names an option (the task's text parser), else 0;
- ``target``: 1 when it names an option in a target set;
- ``diversity``: 1 - the share of the prompt's group that gave the same answer (rewards spread);
- ``utility``: a fixed utility per option (``lab.bandit.utility_for``: drawn from a seed, never
  from the SFT support), 0 for an answer outside the options.

>>> from crystallab.suite import load_task
>>> r = make_rewards(load_task("coin_flip"), ["validity", "target"], target={"heads"})
>>> [f(completions=[" heads", " tails", " maybe"]) for f in r]
[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from crystallab.errors import UserError
from crystallab.lab.config import REWARDS
from crystallab.lab.sft import load_for_training, lora_config, save_checkpoint, trainer_settings, write_dataset
from crystallab.scoring.sample import parse_answer
from crystallab.suite import Task


def make_rewards(
    task: Task, names: Sequence[str], target: set[str] | None = None, utility: Mapping[str, float] | None = None
) -> list[Callable]:
    """TRL reward functions (``f(completions, **kw) -> list[float]``) for a task."""

    def label(c) -> str | None:
        text = c if isinstance(c, str) else c[-1]["content"]
        k = parse_answer(text, task)
        return None if k is None else task.labels[k]

    def validity(completions, **kw):
        return [0.0 if label(c) is None else 1.0 for c in completions]

    def target_set(completions, **kw):
        return [1.0 if label(c) in (target or set()) else 0.0 for c in completions]

    def diversity(completions, prompts=None, **kw):
        labels = [label(c) for c in completions]
        keys = prompts if prompts is not None else [0] * len(labels)
        groups: dict = {}
        for k, lab in zip(keys, labels):
            groups.setdefault(str(k), Counter())[lab] += 1
        return [
            0.0 if lab is None else 1.0 - groups[str(k)][lab] / sum(groups[str(k)].values())
            for k, lab in zip(keys, labels)
        ]

    def utility_of(completions, **kw):
        return [float((utility or {}).get(lab, 0.0)) if lab is not None else 0.0 for lab in map(label, completions)]

    table = {"validity": validity, "target": target_set, "diversity": diversity, "utility": utility_of}
    for n in names:
        if n not in table:
            raise UserError(f"unknown reward '{n}'; use {', '.join(REWARDS)}")
    if "target" in names and not target:
        raise UserError("the 'target' reward needs a target option set")
    if "utility" in names and not utility:
        raise UserError("the 'utility' reward needs a utility per option")
    return [table[n] for n in names]


@dataclass
class GRPORecipe:
    model: str
    out: str
    task: Task
    instructions: Sequence[str] = ()
    rewards: Sequence[str] = ("validity", "target")
    target: set[str] | None = None
    utility: Mapping[str, float] | None = None  # the 'utility' reward's value per option label
    data_file: str | None = None  # where the prompts GRPO sees are written (JSON lines), for audit
    steps: int = 40
    num_generations: int = 8
    prompts_per_step: int = 2
    max_completion_length: int = 6
    # 5e-4 without a KL term collapsed the toy onto empty answers within 20 steps; 1e-4 with a
    # small KL to the SFT model settles instead (valid mass 0.96 after 40 steps)
    learning_rate: float = 1e-4
    beta: float = 0.04  # KL to the reference (SFT) model
    lora: bool = False
    seed: int = 0
    callbacks: list = field(default_factory=list)


def run_grpo(r: GRPORecipe, log=print) -> Path:
    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    from crystallab.lab.trainlog import quiet_trainer

    set_seed(r.seed)
    backend, model, tok = load_for_training(r.model)
    instructions = list(r.instructions or r.task.instruction_texts)
    rows = [{"prompt": backend.render_chat(ins)[0]} for ins in instructions]
    write_dataset(r.data_file, rows)
    data = Dataset.from_list(rows * max(1, r.steps * r.prompts_per_step // len(instructions) + 1))
    args = GRPOConfig(
        **trainer_settings(r.out, r.steps, r.seed),
        per_device_train_batch_size=r.num_generations * r.prompts_per_step,
        num_generations=r.num_generations,
        max_completion_length=r.max_completion_length,
        temperature=1.0,
        learning_rate=r.learning_rate,
        beta=r.beta,
        lr_scheduler_type="constant",
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=list(make_rewards(r.task, r.rewards, r.target, r.utility)),
        args=args,
        train_dataset=data,
        processing_class=tok,
        peft_config=lora_config() if r.lora else None,
        callbacks=list(r.callbacks),
    )
    result = quiet_trainer(trainer, "rl").train()
    log(
        f"GRPO {r.steps} steps, rewards {'+'.join(r.rewards)}{' (LoRA)' if r.lora else ''}: "
        f"loss {result.training_loss:.4f}"
    )
    return save_checkpoint(trainer.model, tok, r.out)


@dataclass
class DPORecipe:
    model: str
    out: str
    task: Task
    chosen: set[str]  # preferred answers
    n_pairs: int = 200
    steps: int = 30
    beta: float = 0.1
    learning_rate: float = 5e-4
    batch_size: int = 8
    lora: bool = False
    seed: int = 0
    callbacks: list = field(default_factory=list)


def run_dpo(r: DPORecipe, log=print) -> Path:
    """Preference tuning: answers in ``chosen`` preferred over the other options."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    from crystallab.lab.trainlog import quiet_trainer

    set_seed(r.seed)
    backend, model, tok = load_for_training(r.model)
    rng = random.Random(r.seed)
    good = [o for o in r.task.labels if o in r.chosen]
    bad = [o for o in r.task.labels if o not in r.chosen]
    if not good or not bad:
        raise UserError("DPO needs both chosen and rejected options")
    rows = [
        {
            "prompt": backend.render_chat(rng.choice(r.task.instruction_texts))[0],
            "chosen": " " + rng.choice(good),
            "rejected": " " + rng.choice(bad),
        }
        for _ in range(r.n_pairs)
    ]
    args = DPOConfig(
        **trainer_settings(r.out, r.steps, r.seed),
        per_device_train_batch_size=r.batch_size,
        learning_rate=r.learning_rate,
        beta=r.beta,
        max_length=128,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=lora_config() if r.lora else None,
        callbacks=list(r.callbacks),
    )
    result = quiet_trainer(trainer, "dpo").train()
    log(f"DPO {r.steps} steps on {len(rows)} pairs{' (LoRA)' if r.lora else ''}: loss {result.training_loss:.4f}")
    return save_checkpoint(trainer.model, tok, r.out)
