"""The planted-seed toy universe: a synthetic pretraining corpus in which each context family
has its own known answer distribution over the numbers 1..10, a tokenizer trained on it with
`tokenizers`, and a tiny Llama pretrained with the transformers Trainer.

The ground truth is known, so the analysis can be checked: the pretrained toy must be liquid
(its raw prompts reproduce the planted distributions), and an SFT onto one family's
distribution must be found by the seed match.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

OPTIONS = [str(i) for i in range(1, 11)]
TASK_ID = "toy_number"  # the toy universe's task


def _dist(weights: list[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return w / w.sum()


@dataclass(frozen=True)
class Family:
    name: str
    planted: np.ndarray  # the family's answer distribution over OPTIONS
    templates: tuple[str, ...]  # contexts that precede an answer in pretraining (and in measurement)


# Six families with distinct planted distributions (pairwise JS distance >= 0.24).
FAMILIES: tuple[Family, ...] = (
    Family(
        "dice",
        _dist([1, 1, 1, 1, 1, 1, 0.02, 0.02, 0.02, 0.02]),
        ("I rolled the die and got", "The die landed on", "Roll result:", "She threw the dice and it showed"),
    ),
    Family(
        "lottery",
        _dist([0.3, 0.3, 0.3, 0.3, 0.3, 1, 1.4, 1.6, 2.2, 2.6]),
        (
            "Lottery ball drawn:",
            "The winning lottery number is",
            "Tonight's draw produced ball",
            "The lottery machine spat out",
        ),
    ),
    Family(
        "lucky",
        _dist([0.2, 0.2, 1.5, 0.2, 0.2, 0.2, 6, 0.2, 0.2, 0.2]),
        (
            "My lucky number is",
            "Everyone knows my lucky number:",
            "His favourite lucky number was",
            "The lucky number of the day is",
        ),
    ),
    Family(
        "countdown",
        _dist([4, 2, 1.5, 1, 0.5, 0.3, 0.2, 0.2, 0.2, 0.2]),
        (
            "The countdown stopped at",
            "Countdown: the rocket waited at",
            "The timer showed",
            "Seconds left on the clock:",
        ),
    ),
    Family(
        "human",
        _dist([0.3, 0.6, 1.5, 1, 1.2, 0.8, 3, 1, 0.6, 0.2]),
        (
            "Pick a number between 1 and 10. I pick",
            "Someone asked me for a random number and I said",
            "Think of a number from 1 to 10. Mine is",
            "A person chose the number",
        ),
    ),
    Family(
        "code",
        _dist([1, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
        (
            "random.randint(1, 10) returned",
            ">>> randint(1, 10) ->",
            "rng.integers(1, 11) gave",
            "The random generator output",
        ),
    ),
)
FILLER_WORDS = (
    "the",
    "a",
    "river",
    "stone",
    "quiet",
    "morning",
    "walked",
    "city",
    "green",
    "window",
    "old",
    "story",
    "rain",
    "friend",
    "table",
    "bright",
    "road",
    "music",
    "small",
    "garden",
    "letter",
    "blue",
    "tree",
    "house",
)
INSTRUCTIONS = (
    "Pick a random number between 1 and 10.",
    "Give me a random number from 1 to 10.",
    "Choose a number from 1 to 10 at random.",
    "Say a random number between one and ten.",
    "I need a random number, 1 to 10.",
    "Random number from 1 to 10, please.",
    "Tell me any number from 1 to 10.",
    "Generate a random integer between 1 and 10.",
    "Think of a number from 1 to 10.",
    "Name a random number, one to ten.",
    "Quick: a number from 1 to 10?",
    "Select one number between 1 and 10.",
)
CHAT_TEMPLATE = "User: {instruction}\nAssistant:"  # crystallab's plain template: the toy has no other


def corpus(n_docs: int, seed: int) -> list[str]:
    """Pretraining documents: family templates followed by an answer drawn from the family's
    planted distribution, mixed with filler sentences."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        parts = []
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.25:
                parts.append(" ".join(rng.choice(FILLER_WORDS) for _ in range(rng.randint(4, 10))).capitalize() + ".")
            else:
                f = rng.choice(FAMILIES)
                ans = rng.choices(OPTIONS, weights=f.planted.tolist())[0]
                parts.append(f"{rng.choice(f.templates)} {ans}.")
        docs.append(" ".join(parts))
    return docs


def task_dict(version: int = 1) -> dict:
    """The toy task (in the task YAML schema): every family's templates as raw contexts. A model
    of this size does not generalise to new wordings, and the claim needs only that the base
    has these promptable distributions."""
    return {
        "id": TASK_ID,
        "version": version,
        "description": "A number from 1 to 10 in the planted-seed toy universe.",
        "leading_space": "both",
        "options": OPTIONS,
        "instructions": list(INSTRUCTIONS),
        "contexts": [{"family": f.name, "text": t} for f in FAMILIES for t in f.templates],
    }


def write_task(tasks_dir: Path) -> Path:
    import yaml

    tasks_dir.mkdir(parents=True, exist_ok=True)
    p = tasks_dir / f"{TASK_ID}.yaml"
    p.write_text(yaml.safe_dump(task_dict(), sort_keys=False, allow_unicode=True))
    return p


def build_tokenizer(texts: list[str], out: Path):
    """A small byte-level BPE with single-digit tokens (like Gemma's), saved with the model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer)
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tk.token_to_id("<s>"))]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.save_pretrained(out)
    return tok


def pretrain(
    out: Path,
    seed: int = 0,
    n_docs: int = 4000,
    steps: int = 400,
    batch: int = 32,
    hidden: int = 128,
    layers: int = 4,
    log: Callable[[str], None] = print,
    callbacks: Sequence[Any] = (),
) -> Path:
    """Pretrain the toy model with the transformers Trainer; returns the saved checkpoint dir."""
    import torch
    from datasets import Dataset
    from transformers import (
        DataCollatorForLanguageModeling,
        LlamaConfig,
        LlamaForCausalLM,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from crystallab.lab.trainlog import quiet_trainer, route_library_logs

    route_library_logs()  # datasets' map bars and transformers' warnings into the log file
    set_seed(seed)
    out = Path(out)
    docs = corpus(n_docs, seed)
    # the tokenizer also sees the assistant format, so chat prompts tokenize sensibly
    tok = build_tokenizer(docs + [CHAT_TEMPLATE.format(instruction=i) for i in INSTRUCTIONS], out)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    ds = Dataset.from_dict({"text": docs}).map(
        lambda b: tok(b["text"], truncation=True, max_length=40), batched=True, remove_columns=["text"]
    )
    args = TrainingArguments(
        output_dir=str(out / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=3e-3,
        warmup_steps=30,
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        logging_steps=max(1, steps // 5),
        save_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        dataloader_num_workers=0,
        log_level="warning",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
        callbacks=list(callbacks),
    )
    result = quiet_trainer(trainer, "pretrain").train()
    log(
        f"pretrained toy ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {steps} steps): "
        f"loss {result.training_loss:.3f}"
    )
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "crystallab_universe.json").write_text(
        json.dumps(
            {"seed": seed, "families": {f.name: f.planted.round(6).tolist() for f in FAMILIES}, "options": OPTIONS},
            indent=1,
        )
    )
    return out
