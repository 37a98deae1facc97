"""The toy universe (v2): a synthetic pretraining corpus in which each context family has its
own known answer distribution over the numbers 1..10, a tokenizer trained on it with
`tokenizers`, and a tiny Llama pretrained with the transformers Trainer.

Why it is built this way (SCIENCE.md, "Controlled experiments the lab must run"): generic SFT
must face a real question, so the universe makes every outcome possible.

- Seven context families with distinct planted distributions (pairwise JS distance >= 0.24, see
  ``test_universe``). One resembles the assistant format: **qa**, quiz and interview pages
  ("Q: ... A:", "Interviewer: ... Guest:") whose random questions get the qa distribution. The
  others do not: dice, lottery, countdown, lucky numbers, code, human-style picks.
- The corpus also holds quiz pages with deterministic questions in the qa formats (sums,
  colours, next numbers): the web has them, and they are what makes the qa family *resemble*
  the assistant format rather than merely share a word with it.
- Chat instruction families mirror the context families ("Roll a die for me." for dice,
  "What is your lucky number?" for lucky, ...) and share their content words, so an assistant
  can answer by content (each instruction like its mirrored family: a liquid chat ensemble), by
  format (every instruction like qa: a crystal in the qa basin), by neither (a crystal outside
  every basin), or stop answering in-set (undefined).
- Every family has held-out templates and held-out instructions (``split: heldout`` in the task
  file). The held-out templates are in pretraining, since they are the base's repertoire; no
  instruction is (the tokenizer alone is trained on their text, so it can spell them). The lab's
  SFT and RL data never hold a held-out instruction, and verdicts are read on the held-out prompts.

No chat-format text is in the corpus: the assistant format only comes from SFT.
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
TASK_VERSION = 2  # 2: seven families, held-out templates and instructions, chat families


def _dist(weights: list[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return w / w.sum()


@dataclass(frozen=True)
class Family:
    name: str
    planted: np.ndarray  # the family's answer distribution over OPTIONS
    templates: tuple[str, ...]  # contexts that precede an answer in pretraining and in measurement
    heldout: tuple[str, ...]  # more contexts, measured as held-out (also in pretraining)
    instructions: tuple[str, ...]  # the mirrored chat family: user turns SFT and RL may see
    heldout_instructions: tuple[str, ...]  # user turns no training data (pretraining included) ever holds


FAMILIES: tuple[Family, ...] = (
    Family(
        "dice",
        _dist([1, 1, 1, 1, 1, 1, 0.02, 0.02, 0.02, 0.02]),
        ("I rolled the die and got", "The die landed on", "Roll result:", "Asked to roll a die, he got"),
        ("She threw the dice and it showed", "The six-sided die came up"),
        ("Roll a die for me.", "Throw a die and tell me the result.", "Roll the dice."),
        ("What does the die show?", "Give the die a roll."),
    ),
    Family(
        "lottery",
        _dist([0.3, 0.3, 0.3, 0.3, 0.3, 1, 1.4, 1.6, 2.2, 2.6]),
        ("Lottery ball drawn:", "The winning lottery number is", "Tonight's draw produced ball", "Drawing a ball:"),
        ("The lottery machine spat out", "The first lottery ball was"),
        ("Draw a lottery ball.", "What is the winning lottery number?", "Pick a lottery ball for me."),
        ("Tell me tonight's lottery ball.", "Draw one ball from the lottery."),
    ),
    Family(
        "lucky",
        _dist([0.2, 0.2, 1.5, 0.2, 0.2, 0.2, 6, 0.2, 0.2, 0.2]),
        (
            "My lucky number is",
            "Everyone knows my lucky number:",
            "His favourite lucky number was",
            "Her lucky number is",
        ),
        ("The lucky number of the day is", "Our family's lucky number is"),
        ("What is your lucky number?", "Tell me a lucky number.", "Give me your lucky number."),
        ("Which number is lucky today?", "Name your lucky number."),
    ),
    Family(
        "countdown",
        _dist([4, 2, 1.5, 1, 0.5, 0.3, 0.2, 0.2, 0.2, 0.2]),
        ("The countdown stopped at", "Countdown: the rocket waited at", "The timer showed", "The countdown read"),
        ("Seconds left on the clock:", "The countdown clock froze at"),
        ("Where did the countdown stop?", "Read me the countdown.", "How many seconds are left on the timer?"),
        ("What does the countdown show?", "Stop the countdown and tell me the number."),
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
        ("When asked to pick a number, most people say", "My friend picked the number"),
        ("Pick a number between 1 and 10.", "Think of a number from 1 to 10.", "Choose any number from 1 to 10."),
        ("Pick a number, 1 to 10.", "Which number from 1 to 10 do you pick?"),
    ),
    Family(
        "code",
        _dist([1, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
        ("random.randint(1, 10) returned", ">>> randint(1, 10) ->", "rng.integers(1, 11) gave", "The RNG output"),
        ("The random generator output", "randint(1, 10) printed"),
        ("Run randint(1, 10).", "What does random.randint(1, 10) return?", "Call the random generator."),
        ("Print randint(1, 10).", "Give me the RNG output for 1 to 10."),
    ),
    Family(
        "qa",
        _dist([0.2, 0.3, 0.5, 4, 0.5, 0.3, 0.3, 3, 0.3, 0.2]),
        (
            "Q: Give me a random number. A:",
            "Interviewer: Name a random number. Guest:",
            "Question: any number from 1 to 10? Answer:",
            "Q: Say a number. A:",
        ),
        ("Interviewer: Quick, a number? Guest:", "Question: name a number. Answer:"),
        ("Give me a random number.", "Name a random number.", "Say a number."),
        ("Quick, a number?", "Any number from 1 to 10?"),
    ),
)
QA_FORMATS = (("Q:", "A:"), ("Question:", "Answer:"), ("Interviewer:", "Guest:"))
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
INSTRUCTIONS = tuple(i for f in FAMILIES for i in f.instructions + f.heldout_instructions)
CHAT_TEMPLATE = "User: {instruction}\nAssistant:"  # crystallab's plain template: the toy has no other


def _quiz(rng: random.Random) -> str:
    """A deterministic quiz line in one of the qa formats, of the kinds generic SFT teaches (sums,
    copies, reversals, counts, conversions, spelling, yes/no facts, look-ups): the web holds such
    pages, and they are what makes the qa family *resemble* the assistant format. Their answers
    are natural ones (single digits included): the base knows the tasks, SFT only the format."""
    from crystallab.lab.generic import KINDS, MAKERS

    q, a = rng.choice(QA_FORMATS)
    ins, comp = MAKERS[rng.choice(KINDS)](rng)
    return f"{q} {ins} {a} {comp}."


def corpus(n_docs: int, seed: int) -> list[str]:
    """Pretraining documents: family templates (held-out ones included) followed by an answer
    drawn from the family's planted distribution, mixed with quiz lines and filler sentences."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        parts = []
        for _ in range(rng.randint(1, 3)):
            u = rng.random()
            if u < 0.2:
                parts.append(" ".join(rng.choice(FILLER_WORDS) for _ in range(rng.randint(4, 10))).capitalize() + ".")
            elif u < 0.35:
                parts.append(_quiz(rng))
            else:
                f = rng.choice(FAMILIES)
                ans = rng.choices(OPTIONS, weights=f.planted.tolist())[0]
                parts.append(f"{rng.choice(f.templates + f.heldout)} {ans}.")
        docs.append(" ".join(parts))
    return docs


def task_dict(version: int = TASK_VERSION) -> dict:
    """The toy task (in the task YAML schema): every family's templates as raw contexts, its
    mirrored instructions as a chat family, the held-out ones marked ``split: heldout``."""

    def marked(family: str, texts: Sequence[str], split: str) -> list[dict[str, str]]:
        return [{"family": family, "text": t, "split": split} for t in texts]

    return {
        "id": TASK_ID,
        "version": version,
        "description": "A number from 1 to 10 in the toy universe (v2: seven families, held-out prompts).",
        "leading_space": "both",
        "options": OPTIONS,
        "instructions": [
            x
            for f in FAMILIES
            for x in marked(f.name, f.instructions, "train") + marked(f.name, f.heldout_instructions, "heldout")
        ],
        "contexts": [
            x for f in FAMILIES for x in marked(f.name, f.templates, "train") + marked(f.name, f.heldout, "heldout")
        ],
    }


def write_task(tasks_dir: Path) -> Path:
    import yaml

    tasks_dir.mkdir(parents=True, exist_ok=True)
    p = tasks_dir / f"{TASK_ID}.yaml"
    p.write_text(yaml.safe_dump(task_dict(), sort_keys=False, allow_unicode=True))
    return p


def split_task(task: dict[str, Any], heldout_share: float = 1 / 3) -> dict[str, Any]:
    """A task (YAML schema) with held-out prompts marked, for a task that marks none (a built-in
    task run by the lab on a real model): in every family, the last ``heldout_share`` of its
    contexts and of its instructions (at least one, and never all) are held out.

    >>> t = split_task({"contexts": [{"family": "a", "text": str(i)} for i in range(3)], "instructions": []})
    >>> [c["split"] for c in t["contexts"]]
    ['train', 'train', 'heldout']
    """
    out = dict(task)
    for key in ("contexts", "instructions"):
        items = [x if isinstance(x, dict) else {"family": "instruction", "text": x} for x in task.get(key, [])]
        if any("split" in x for x in items):
            out[key] = items
            continue
        by: dict[str, list[int]] = {}
        for i, x in enumerate(items):
            by.setdefault(x["family"], []).append(i)
        held = {
            i for idx in by.values() if len(idx) >= 2 for i in idx[len(idx) - max(1, round(len(idx) * heldout_share)) :]
        }
        out[key] = [{**x, "split": "heldout" if i in held else "train"} for i, x in enumerate(items)]
    return out


def tokenizer_extras() -> list[str]:
    """Text the tokenizer also sees (never the model): the assistant format and generic SFT
    data, so that SFT prompts tokenize into sensible pieces."""
    texts = [CHAT_TEMPLATE.format(instruction=i) for i in INSTRUCTIONS]
    try:
        from crystallab.lab.generic import generic_examples
    except ImportError:  # pragma: no cover
        return texts
    return texts + [
        CHAT_TEMPLATE.format(instruction=e["instruction"]) + " " + e["completion"]
        for e in generic_examples(400, seed=0)
    ]


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
    tok = build_tokenizer(docs + tokenizer_extras(), out)
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
            {
                "seed": seed,
                "version": TASK_VERSION,
                "families": {f.name: f.planted.round(6).tolist() for f in FAMILIES},
                "options": OPTIONS,
            },
            indent=1,
        )
    )
    return out
