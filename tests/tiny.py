"""Tiny real models for tests: a tokenizer trained with `tokenizers` on task-like text and a
2-layer model built from a config, saved with save_pretrained, loaded like any checkpoint."""

from __future__ import annotations

import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


LLAMA3_SPLIT = (  # the Llama 3 pre-tokenizer pattern
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    from crystallab.suite import load_task

    rng = random.Random(seed)
    lines = []
    for tid in ("number_1_10",):
        t = load_task(tid)
        forms = [f for o in t.options for f in o.forms]
        for c in t.contexts:
            lines.append(c.text + " " + rng.choice(forms))
        lines.extend(t.instruction_texts)
    for _ in range(n):
        lines.append(" ".join(str(rng.randint(0, 100)) for _ in range(8)))
        lines.append(
            ", ".join(rng.choice(["heads", "tails", "Heads", "red", "blue", "seven", "ten"]) for _ in range(4))
        )
        lines.append(f">>> random.randint(1, 10)\n{rng.randint(1, 10)}\n>>> f(x)\n")
    return lines


def make_tokenizer(kind: str, out: Path, chat_template: bool = False):
    """kind='digits': every digit is its own token (like Gemma);
    kind='bpe': byte-level BPE whose merges make multi-digit tokens ('10', 'Ġ10');
    kind='llama3': Llama 3's pre-tokenizer regex (also OLMo 2's and Qwen's), under which
    punctuation and the newlines after it are one pre-token, so ')\n' becomes one token."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    if kind == "digits":
        tk.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    elif kind == "bpe":
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    elif kind == "llama3":
        tk.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        raise ValueError(kind)
    tk.decoder = decoders.ByteLevel()
    special = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(corpus(), trainer)
    bos = tk.token_to_id("<s>")
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def make_model(arch: str, tokenizer, out: Path, seed: int = 0, init: float = 0.3):
    """A 2-layer model with a large init, so its random next-token distributions are peaked."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    torch.manual_seed(seed)
    V = len(tokenizer)
    if arch == "llama":
        cfg = LlamaConfig(
            vocab_size=V,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            initializer_range=init,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )
    elif arch == "gpt2":
        cfg = GPT2Config(
            vocab_size=V,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=512,
            initializer_range=init,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    else:
        raise ValueError(arch)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def make_checkpoint(
    root: Path, arch: str = "llama", tok: str = "digits", chat_template: bool = False, seed: int = 0
) -> Path:
    out = root / f"{arch}-{tok}-{'chat' if chat_template else 'plain'}-{seed}"
    if not (out / "config.json").exists():
        t = make_tokenizer(tok, out, chat_template=chat_template)
        make_model(arch, t, out, seed=seed)
    return out


def train_briefly(be, lines: list[str], steps: int = 40, lr: float = 3e-3, add_special_tokens: bool = True):
    """A few full-batch Adam steps of next-token training on ``lines`` (padding masked out), so
    a tiny random model puts real, uneven mass on a task's options. Returns ``be`` in eval mode."""
    import torch

    batch = be.tokenizer(lines, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    opt = torch.optim.Adam(be.model.parameters(), lr=lr)
    torch.manual_seed(0)
    be.model.train()
    for _ in range(steps):
        loss = be.model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    be.model.eval()
    return be
