"""`crystallab measure`: one checkpoint × tasks × prompts → DIR/distributions.parquet."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="measure output distributions of one checkpoint", description="Measure a model's output distribution on random tasks, exactly or by sampling, into a resumable results folder.")
    p.add_argument("--model", required=True, help="HF id or local dir, gguf:PATH, builtin:gemma-3-270m, api:BASE_URL#MODEL[?key_env=VAR&server=...] or vllm:HF_ID[?tensor_parallel_size=N] (docs/scaling.md)")
    p.add_argument("--label", help="checkpoint name (default: the model spec)")
    p.add_argument("--parent", help="label of the checkpoint this one was trained from (default: the one measured before)")
    p.add_argument("--stage", default="other", choices=["base", "sft", "dpo", "rl", "other"])
    p.add_argument("--step", type=int, help="training step of this checkpoint")
    p.add_argument("--replica", type=int, help="replica of a replicated run, written into every row (default: none)")
    p.add_argument("--revision", help="model revision (branch, tag or commit) for HF ids")
    add_measure_options(p)
    p.set_defaults(run=run)


def add_measure_options(p: argparse.ArgumentParser, ladder: bool = False) -> None:
    """The flags `measure` and `ladder` share (how to measure, not which checkpoint)."""
    p.add_argument("--task", required=not ladder, help="task ids, comma-separated, or 'all'")
    p.add_argument("--out", required=not ladder, help="results folder (created; measuring into it again resumes)")
    p.add_argument("--prompts", default="all", choices=["raw", "chat", "all"], help="prompt set (default: all)")
    p.add_argument("--method", default="exact", choices=["exact", "sample", "logprobs-topk"], help="exact trie scoring, sampling, or (api: models) approximate scoring from top-k logprobs (default: exact)")
    p.add_argument("--samples", type=int, default=200, help="completions per prompt with --method sample (default: 200)")
    p.add_argument("--parser", default="text", choices=["text", "tokens"], help="sample parser: the task's text parser, or the exact scorer's token event")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks-dir", help="a folder of extra task YAML files")
    p.add_argument("--limit", type=int, help="use only N prompts of each kind (contexts spread over families)")
    p.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on CUDA), float32, bfloat16, float16")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--device-map", choices=["auto"], help="auto: spread a model larger than one GPU over every visible GPU (accelerate)")
    p.add_argument("--batch-tokens", type=int, default=0, help="padded tokens per forward pass (default: by device)")
    p.add_argument("--chunk", type=int, default=16, help="prompts per results shard: a killed run loses at most one chunk (default: 16)")
    p.add_argument("--trust-remote-code", action="store_true", help="run the model repository's own code (off by default)")
    p.add_argument("--allow-pickle", action="store_true", help="load pickle (.bin) weights when no safetensors exist")
    p.add_argument("--no-plain-chat", action="store_true", help="fail instead of using the plain User:/Assistant: template for models without one")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: on a terminal outside CI)")


def config_from_args(args: argparse.Namespace, **override):
    from crystallab.measuring import MeasureConfig, MeasureSettings
    from crystallab.models.base import LoadSettings

    load = LoadSettings(dtype=args.dtype, device=args.device, device_map=args.device_map, revision=getattr(args, "revision", None),
                        trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle, allow_plain_chat=not args.no_plain_chat)
    settings = MeasureSettings(prompts=args.prompts, method=args.method, samples=args.samples, parser=args.parser, seed=args.seed,
                               limit=args.limit, batch_tokens=args.batch_tokens)
    fields = dict(
        model=getattr(args, "model", ""), tasks=args.task.split(","), out=args.out, label=getattr(args, "label", None), stage=getattr(args, "stage", "other"),
        parent=getattr(args, "parent", None), step=getattr(args, "step", None), replica=getattr(args, "replica", None),
        tasks_dir=args.tasks_dir, chunk=args.chunk, progress=args.progress, load=load, settings=settings,
    )
    fields.update(override)
    return MeasureConfig(**fields)


def run(args: argparse.Namespace) -> int:
    from crystallab.measuring import run_measure

    run_record = run_measure(config_from_args(args))
    tp = run_record["throughput"]
    print(f"measured {tp['prompts']} prompt(s) of {run_record['checkpoint']} in {tp['seconds']:.1f} s "
          f"({tp['prompts_per_s']:.2f} prompts/s, {tp['options_per_s']:.1f} options/s, {tp['tokens_per_s']:.0f} tokens/s); "
          f"{tp['skipped_prompts']} already done", file=sys.stderr)
    print(f"{args.out}/distributions.parquet")
    return 1 if run_record.get("failed") else 0
