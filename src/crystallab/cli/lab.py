"""`crystallab lab planted-seed | forced-seed`: the controlled experiments of the lab."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_lab_options(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--config", help="YAML file of lab settings (see configs/); flags given here override it")
    p.add_argument("--out", default=None, help=f"run folder (default: {default_out})")
    p.set_defaults(default_out=default_out)
    p.add_argument("--seed", type=int)
    p.add_argument("--quick", action="store_true", help="a fast, rough version (for tests and a first look)")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights")
    p.add_argument("--base-model", help="start from this checkpoint instead of the toy universe (e.g. builtin:gemma-3-270m)")
    p.add_argument("--task", help="task to measure and train on (default: toy_number, the toy universe's)")
    p.add_argument("--pretrain-steps", type=int)
    p.add_argument("--sft-steps", type=int)
    p.add_argument("--rl-steps", type=int)
    p.add_argument("--track-every", type=int, help="measure the prompt set every N training steps")
    p.add_argument("--limit", type=int, help="track only N prompts of each kind")


def lab_config(args: argparse.Namespace, **kw):
    """LabConfig from --config (if any), then the flags given, then ``kw`` (the experiment's)."""
    from crystallab.lab.experiments import LabConfig

    fields = {k: v for k, v in {
        "out": args.out, "seed": args.seed, "lora": args.lora or None, "base_model": args.base_model, "task": args.task, "pretrain_steps": args.pretrain_steps,
        "sft_steps": args.sft_steps, "rl_steps": args.rl_steps, "track_every": args.track_every, "limit": args.limit,
    }.items() if v is not None}
    fields.update({k: v for k, v in kw.items() if v is not None})
    if args.config:
        cfg = LabConfig.from_yaml(args.config, **fields)
    else:
        cfg = LabConfig.quick(**fields) if args.quick else LabConfig(**fields)
    cfg.out = cfg.out or args.default_out
    return cfg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="controlled experiments: planted-seed, forced-seed", description="Run the lab's controlled experiments: pretrain or load a model, SFT and RL it with phase tracking, analyze and report.")
    exp = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    ps = exp.add_parser("planted-seed", help="SFT onto one planted family's distribution; the analysis must name it")
    add_lab_options(ps, "runs/planted-seed")
    ps.add_argument("--seeds", type=int, default=1, help="repeat with N seeds (sharing one pretrained universe) and print the tally")
    ps.add_argument("--family", help="the planted seed family (default: drawn with each seed)")
    ps.add_argument("--sft-data", default="planted", choices=["planted", "diverse", "format"], help="SFT answers: a planted family's, each instruction its own family's (diverse), or none (format)")
    ps.add_argument("--no-rl", action="store_true", help="stop after SFT (naming the seed needs no RL)")
    ps.set_defaults(run=run_planted)
    fs = exp.add_parser("forced-seed", help="SFT onto a chosen distribution, then RL rewarded outside its support: can RL escape?")
    add_lab_options(fs, "runs/forced-seed")
    fs.add_argument("--seed-from", default="base-prompt", choices=["base-prompt", "outside"], help="the forced distribution: one base prompt's measured distribution, or mass on the two options the base likes least")
    fs.add_argument("--family", help="with --seed-from base-prompt: which family (default: drawn with the seed)")
    fs.set_defaults(run=run_forced)


def run_planted(args: argparse.Namespace) -> int:
    from crystallab.lab.experiments import run_lab, summary_text

    if args.seeds <= 0:
        from crystallab.errors import UserError

        raise UserError("--seeds must be positive")
    out = Path(args.out or args.default_out)
    summaries = []
    first = args.seed or 0
    for k in range(args.seeds):
        seed = first + k
        run_out = out if args.seeds == 1 else out / f"seed-{seed}"
        extra = {} if args.seeds == 1 else {"base_dir": str(out / "universe"), "universe_seed": first}
        cfg = lab_config(args, out=str(run_out), seed=seed, sft_data=args.sft_data, seed_family=args.family, rl=not args.no_rl, extra=extra)
        s = run_lab(cfg)
        summaries.append(s)
        print(f"--- seed {seed} ---\n{summary_text(s)}")
    if args.seeds > 1 and args.sft_data == "planted":
        hits = sum(s["seed_named_correctly"] for s in summaries)
        confirmed = sum(s["verdicts"].get("nucleation") == "holds" for s in summaries)
        rows = [{"seed": s["config"]["seed"], "planted": s["planted_family"], "named": s["named_family"],
                 "z_k_star": (s["nucleation"] or {}).get("z_k_star"), "seed_p": (s["nucleation"] or {}).get("seed_p"),
                 "nucleation": s["verdicts"].get("nucleation")} for s in summaries]
        (out / "tally.json").write_text(json.dumps({"named_correctly": hits, "confirmed": confirmed, "seeds": args.seeds, "runs": rows}, indent=1))
        for r in rows:
            print(f"seed {r['seed']}: planted {r['planted']:<10} k* {str(r['named']):<10} z {r['z_k_star']}  seed_p {r['seed_p']}  "
                  f"nucleation {r['nucleation']}")
        print(f"tally (a positive control): k* was the planted family in {hits} of {args.seeds} seeds (nucleation holds in {confirmed}); "
              f"{out / 'tally.json'}")
    return 0


def run_forced(args: argparse.Namespace) -> int:
    from crystallab.lab.experiments import run_lab, summary_text

    cfg = lab_config(args, sft_data=args.seed_from, seed_family=args.family, rl_target="outside-support")
    s = run_lab(cfg)
    print(summary_text(s))
    st = s.get("settling") or {}
    if st.get("rho") is not None:
        from crystallab.lab.experiments import _iv

        verdict = s["verdicts"].get("settling")
        answer = {"fails": "yes", "holds": "no"}.get(verdict or "", "inconclusive")
        print(f"can RL escape the forced seed's support? {answer} (settling {verdict}): rewarded only for {s['rl']['target']}, "
              f"RL kept excess retention ρ {_iv(st['rho'])} (retention {_iv(st['retention'])}) on the SFT support "
              f"{s['rl']['sft_support']}")
    return 0
