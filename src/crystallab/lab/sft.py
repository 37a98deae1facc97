"""Supervised fine-tuning with TRL's SFTTrainer on assistant-format data, for any causal LM.

The data are prompt/completion pairs: an instruction rendered with the model's chat template
(the plain ``User: ...\\nAssistant:`` one for models without a template), and an answer drawn
from a chosen distribution over the task's options. Or, with ``answers=None``, format-only
data with no random task in it (deterministic questions), to see what SFT does on its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from crystallab.errors import UserError, require
from crystallab.models.base import LoadSettings

FORMAT_ONLY = (  # deterministic Q/A: teaches the assistant format, no random choice anywhere
    ("What is {a} plus {b}?", lambda a, b: str(a + b)),
    ("Repeat the word {w}.", None),
    ("What comes after {a}?", lambda a, b: str(a + 1)),
    ("Spell the word {w} backwards.", None),
)
WORDS = ("river", "stone", "garden", "letter", "window", "music", "table", "cloud")


@dataclass
class SFTRecipe:
    model: str  # a local checkpoint dir or any model spec crystallab loads
    out: str
    instructions: Sequence[str] = ()
    options: Sequence[str] = ()
    answers: Sequence[float] | None = None  # distribution over options; None: format-only data
    per_instruction: Sequence[Sequence[float]] | None = None  # one distribution per instruction (keeps diversity)
    # prebuilt data ({"instruction", "completion"}, rendered here with the model's template): overrides the above
    examples: Sequence[dict[str, str]] | None = None
    data_file: str | None = None  # where the rendered dataset is written (JSON lines), for audit
    n_examples: int = 400
    steps: int = 60
    learning_rate: float = 1e-3
    decay: float = 0.2  # the last fraction of the steps over which the rate falls linearly to 0 (0: constant)
    batch_size: int = 16
    lora: bool = False
    lora_r: int = 8
    seed: int = 0
    callbacks: list = field(default_factory=list)


def quota_answers(options: Sequence[str], dist: Sequence[float], n: int, rng: random.Random) -> list[str]:
    """``n`` answers whose counts follow ``dist`` exactly (largest remainder), in random order.

    Why not ``n`` independent draws: their empirical distribution misses ``dist`` by a JS
    distance of about 0.07 at n = 240 over 10 options, more than the resolution ``ε`` = 0.05, so
    a model that fits its data perfectly would still land outside the basin it was trained on,
    and a rare option (mass 0.01) would be absent from the data one time in ten.

    >>> a = quota_answers(["x", "y", "z"], [0.5, 0.3, 0.2], 10, random.Random(0))
    >>> sorted(a), len(quota_answers(["x", "y"], [0.999, 0.001], 1000, random.Random(0)))
    (['x', 'x', 'x', 'x', 'x', 'y', 'y', 'y', 'z', 'z'], 1000)
    >>> quota_answers(["x", "y"], [0.999, 0.001], 1000, random.Random(0)).count("y")
    1
    """
    w = [max(0.0, float(x)) for x in dist]
    total = sum(w)
    if not (total > 0 and len(w) == len(options)):
        raise UserError(f"answer distribution: {len(options)} non-negative weights, not all 0, expected; got {dist!r}")
    exact = [n * x / total for x in w]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(len(w)), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in by_remainder[: n - sum(counts)]:
        counts[k] += 1
    out = [o for o, c in zip(options, counts) for _ in range(c)]
    rng.shuffle(out)
    return out


def assign_answers(
    keys: Sequence[Any], dists: Mapping[Any, Sequence[float]], options: Sequence[str], rng: random.Random
) -> list[str]:
    """One answer per example; the examples sharing a key (an instruction, a family) get exact
    quotas of that key's distribution (``quota_answers``)."""
    out: list[str] = [""] * len(keys)
    groups: dict[Any, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    for k, idx in groups.items():
        for i, a in zip(idx, quota_answers(options, dists[k], len(idx), rng)):
            out[i] = a
    return out


def sft_examples(r: SFTRecipe, render) -> list[dict[str, str]]:
    """Prompt/completion pairs; ``render(instruction) -> prompt text``."""
    rng = random.Random(r.seed)
    out = []
    if r.answers is None and r.per_instruction is None:
        for i in range(r.n_examples):
            q, f = FORMAT_ONLY[i % len(FORMAT_ONLY)]
            a, b, w = rng.randint(1, 5), rng.randint(1, 4), rng.choice(WORDS)
            ans = f(a, b) if f else (w if "Repeat" in q else w[::-1])
            out.append({"prompt": render(q.format(a=a, b=b, w=w)), "completion": " " + ans})
        return out
    js = [rng.randrange(len(r.instructions)) for _ in range(r.n_examples)]
    if r.per_instruction is not None:  # instruction j gets distribution j (cycled)
        keys: list[Any] = [j % len(r.per_instruction) for j in js]
        dists: dict[Any, Sequence[float]] = dict(enumerate(r.per_instruction))
    else:
        keys, dists = [0] * len(js), {0: r.answers or ()}
    answers = assign_answers(keys, dists, list(r.options), rng)
    return [{"prompt": render(r.instructions[j]), "completion": " " + a} for j, a in zip(js, answers)]


def write_dataset(path: str | Path | None, rows: Sequence[dict[str, Any]]) -> None:
    """The exact rows a trainer is given, as JSON lines (atomically): the held-out check reads them."""
    if path is None:
        return
    import json

    from crystallab.store import atomic_write_bytes

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), "".join(json.dumps(x) + "\n" for x in rows).encode())


def lora_config(r: int = 8):
    peft = require("peft", "lab")
    return peft.LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def load_for_training(spec: str):
    """A model and tokenizer to train, through crystallab's loader (GGUF and builtins included)."""
    from crystallab.models.hf import load_backend

    be = load_backend(spec, LoadSettings(dtype="float32", device="auto"))  # fp32 master weights; CUDA when present
    return be, be.model, be.tokenizer


def trainer_settings(out: str | Path, steps: int, seed: int) -> dict[str, Any]:
    """The settings every recipe's TRL config shares: no intermediate saves or trackers, fp32
    (TRL defaults bf16 on, which CPUs run slowly or not at all), CUDA when present, no progress
    bar or printed logs (trainlog.py sends them to the run's train.log). Activation
    checkpointing (TRL turns it on) only on CUDA, where it saves memory on large models; on CPU
    it only costs time. It is set by its current name: TRL's default sets the deprecated one."""
    import torch

    from crystallab.console import route_library_logs

    route_library_logs()  # before the trainer prepares its data (datasets' map bars)
    score_labelled_positions_only()
    cuda = torch.cuda.is_available()
    return dict(
        output_dir=str(Path(out) / "trainer"),
        max_steps=steps,
        logging_steps=max(1, steps // 5),
        save_strategy="no",
        report_to=[],
        seed=seed,
        bf16=False,
        fp16=False,
        use_cpu=not cuda,
        disable_tqdm=True,
        dataloader_num_workers=0,
        activation_checkpointing=cuda,
        log_level="warning",
    )


def score_labelled_positions_only() -> bool:
    """Make TRL's fused LM head score only the positions that carry a label, on every device.

    TRL (1.x) projects the hidden states onto the vocabulary in chunks and, off CUDA/XPU, does so
    for *every* position, prompt tokens included, then zeroes the unlabelled ones; it keeps the
    shapes fixed for compilers (Neuron) that recompile on a new shape. Eager PyTorch on CPU has no
    such cost, and with a 262k vocabulary the head is most of a training step: SFT scores a
    2-token answer after a 30-token prompt, GRPO a 6-token completion. Scoring the labelled
    positions only gives the same loss and gradients (the others were multiplied by zero) in a
    fraction of the time (benchmarks/lab.py). Returns whether the hook was found and set."""
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:
        return False
    decide = getattr(trl_utils, "_use_triton", None)
    if decide is None or getattr(decide, "_crystallab", False):
        return decide is not None

    def compact(device: Any) -> bool:
        return device.type in ("cpu", "cuda", "xpu", "mps") or bool(decide(device))

    compact._crystallab = True  # type: ignore[attr-defined]
    trl_utils._use_triton = compact  # only the compact-or-not choice; the kernels keep their own
    return True


def save_checkpoint(model: Any, tokenizer: Any, out: str | Path) -> Path:
    """Save a plain safetensors checkpoint (LoRA merged) that loads like any other model."""
    out = Path(out)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def lr_schedule(steps: int, decay: float) -> dict[str, Any]:
    """Warm-up, a constant phase, then a linear decay to 0 over the last ``decay`` of the steps.

    Why the decay: at a constant rate the endpoint follows the last minibatches. On the toy its
    distance to its own SFT target jumped between 0.045 and 0.137 over the last 50 of 150 steps,
    above the basins' radius (0.05-0.06), so even a positive control could read "outside every
    basin". The constant phase keeps the trajectory the tracker watches; the decay settles the end.

    >>> lr_schedule(150, 0.2)["lr_scheduler_kwargs"], lr_schedule(30, 0)["lr_scheduler_type"]
    ({'num_decay_steps': 30, 'decay_type': 'linear'}, 'constant_with_warmup')
    """
    warmup = min(5, steps // 5)
    n_decay = min(round(decay * steps), steps - warmup)
    if n_decay <= 0:
        return dict(lr_scheduler_type="constant_with_warmup", warmup_steps=warmup)
    kwargs = {"num_decay_steps": n_decay, "decay_type": "linear"}
    return dict(lr_scheduler_type="warmup_stable_decay", warmup_steps=warmup, lr_scheduler_kwargs=kwargs)


def run_sft(r: SFTRecipe, log=print) -> Path:
    """Fine-tune and save to ``r.out``; returns the checkpoint dir."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from crystallab.lab.trainlog import quiet_trainer

    set_seed(r.seed)
    backend, model, tok = load_for_training(r.model)
    render = lambda ins: backend.render_chat(ins)[0]  # noqa: E731
    if r.examples is not None:
        rows = [{"prompt": render(e["instruction"]), "completion": " " + e["completion"]} for e in r.examples]
    else:
        rows = sft_examples(r, render)
    write_dataset(r.data_file, rows)
    data = Dataset.from_list(rows)
    args = SFTConfig(
        **trainer_settings(r.out, r.steps, r.seed),
        per_device_train_batch_size=r.batch_size,
        learning_rate=r.learning_rate,
        **lr_schedule(r.steps, r.decay),
        max_length=128,
        packing=False,
        completion_only_loss=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tok,
        peft_config=lora_config(r.lora_r) if r.lora else None,
        callbacks=list(r.callbacks),
    )
    result = quiet_trainer(trainer, "sft").train()
    log(f"SFT {r.steps} steps on {len(data)} examples{' (LoRA)' if r.lora else ''}: loss {result.training_loss:.3f}")
    return save_checkpoint(trainer.model, tok, r.out)
