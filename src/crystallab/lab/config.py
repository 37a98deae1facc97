"""The lab's settings (``LabConfig``) and its experiments, light enough for ``crystallab --help``
(no torch, no scipy): the CLI generates its flags from these fields.

One precedence rule: LabConfig's defaults, then the experiment's own, then ``--quick``'s (when
asked), then the config file, then the flags the user typed. An experiment fixes some settings (a
forced-seed run forces a base-prompt or an outside distribution); a file or flag that asks for
something else is one line, never silently replaced.

>>> cfg = resolve_lab_config("forced-seed", typed={"sft_data": "outside", "seed": 3})
>>> cfg.sft_data, cfg.rl_target, cfg.seed, cfg.out
('outside', 'outside-support', 3, 'runs/forced-seed')
>>> resolve_lab_config("forced-seed", typed={"sft_data": "format"})
Traceback (most recent call last):
crystallab.errors.UserError: --seed-from format contradicts `crystallab lab forced-seed`, which takes \
base-prompt or outside
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from crystallab.errors import UserError
from crystallab.lab.generic import MENTIONS
from crystallab.lab.universe import FAMILIES, TASK_ID
from crystallab.yamlconf import read_settings

SFT_DATA = ("planted", "base-prompt", "outside", "diverse", "format")
RL_TARGETS = ("seed-top", "outside-support")
REWARDS = ("validity", "target", "diversity", "utility")
SEED_BLIND = ("utility", "diversity", "validity")  # rewards chosen without looking at the SFT support
SWEEP_CONTROLS = ("mixture", "steps", "lr")  # what a sweep varies: the data, the training amount, its rate


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A field with its command-line help (and choices)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class LabConfig:
    """One lab run: what to train, on what, for how long, and what to measure along the way."""

    out: str = _f("", "run folder (created; holds config.yaml, train.log, checkpoints/, results/)")
    seed: int = _f(0, "seed of the run: the drawn family, the SFT data, training")
    sft_data: str = _f(
        "planted",
        "SFT answers: a planted family's (toy), one base prompt's distribution "
        "(base-prompt), mass on the two options the base likes least (outside), each instruction "
        "its own base prompt's (diverse, keeps the diversity), or no random task (format)",
        choices=SFT_DATA,
    )
    seed_family: str | None = _f(None, "which family's distribution SFT is shown (default: drawn with the seed)")
    rl: bool = _f(True, "run GRPO after SFT")
    rl_target: str = _f(
        "seed-top",
        "what GRPO rewards: the SFT aggregate's top 2 options (seed-top), or the "
        "options outside its 90 % support (outside-support)",
        choices=RL_TARGETS,
    )
    rl_rewards: tuple[str, ...] = _f(("validity", "target"), f"GRPO reward functions ({', '.join(REWARDS)})")
    base_model: str | None = _f(
        None, "start from this checkpoint instead of the toy universe (e.g. builtin:gemma-3-270m)"
    )
    task: str = _f(TASK_ID, "task to measure and train on (the toy universe's by default)")
    pretrain_steps: int = _f(400, "pretraining steps of the toy universe")
    sft_steps: int = _f(150, "SFT steps")
    sft_examples: int = _f(1200, "SFT examples drawn")
    sft_lr: float = _f(1e-3, "SFT learning rate (constant after a short warm-up, then the decay)")
    sft_decay: float = _f(0.2, "fraction of the SFT steps, at the end, over which the rate decays to 0 (0: none)")
    rl_steps: int = _f(40, "GRPO steps")
    track_every: int = _f(10, "measure the prompt set every N training steps")
    lora: bool = _f(False, "train LoRA adapters (peft) instead of all weights")
    limit: int | None = _f(None, "track only N prompts of each kind and split (default: all)")
    report: bool = _f(True, "write report.html")
    n_boot: int = _f(1000, "bootstrap draws of the analysis")
    base_dir: str | None = _f(
        None,
        "the toy universe's folder: reused when it holds a model, else pretrained "
        "there (default: RUN/checkpoints/base)",
    )
    universe_seed: int | None = _f(None, "seed of the toy universe's pretraining (default: --seed)")
    replicas: int = _f(5, "replicas of every trained arm (seeds --seed, --seed + 1, ...), sharing one base model")
    universe_seeds: int = _f(1, "toy universes pretrained (seeds --universe-seed, +1, ...), each with its replicas")
    mentions: str = _f(
        "none,known",
        "generic SFT variants: no option string in any completion (none), option mentions that follow a known "
        "distribution (known), the options as generic data carry them, measured (natural)",
    )
    targets: int = _f(5, "random-target: targets drawn over the simplex")
    m0: str = _f("0.001,0.01,0.03,0.1,0.3", "rl-escape: the rewarded option's SFT mass, a comma-separated grid")
    reward: str = _f(
        "utility",
        "the seed-blind GRPO reward: a fixed random utility per option (utility), validity + a diversity bonus "
        "(diversity), or validity only",
        choices=("utility", "diversity", "validity"),
    )
    families: str | None = _f(None, "sweep: the two base families A,B the SFT data mix (default: the two most distant)")
    grid: int = _f(11, "sweep: values of the mixture λ, evenly spaced from 0 to 1")
    sizes: str = _f(
        "", "sweep: toy model hidden sizes, comma-separated (e.g. 32,64,128; 4 layers each); default: the toy's 128"
    )

    control: str = _f(
        "mixture",
        "sweep: the control parameter: the SFT data's mixture λ (mixture), SFT steps on a log grid from "
        "sft-steps/32 to 2·sft-steps (steps), or the learning rate on a log grid from sft-lr/30 to 3·sft-lr (lr)",
        choices=SWEEP_CONTROLS,
    )
    at: float = _f(1.0, "sweep --control steps|lr: the SFT data's mixture λ, held fixed (1: family B's answers)")

    def size_list(self) -> list[int]:
        """``--sizes`` as integers (empty: the toy's own size)."""
        try:
            return [int(x) for x in self.sizes.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--sizes takes comma-separated integers, got '{self.sizes}'") from None

    @classmethod
    def quick(cls, **kw: Any) -> LabConfig:
        """A fast version for tests: fewer steps everywhere, fewer bootstrap draws."""
        return cls(**{**QUICK, **kw})

    @classmethod
    def read_yaml(cls, path: str | Path) -> dict[str, Any]:
        """The settings a YAML file of LabConfig fields gives (see configs/), each checked against
        its field's type: an unknown key or a value of the wrong type is one line."""
        return read_settings(path, [f.name for f in dataclasses.fields(cls)], "lab", schema=cls)

    @classmethod
    def from_yaml(cls, path: str | Path, **override: Any) -> LabConfig:
        """A YAML file of LabConfig fields over the defaults; keyword arguments override it."""
        return cls(**{**cls.read_yaml(path), **override})

    @property
    def toy(self) -> bool:
        """Runs on the built-in toy universe (pretrained here), not a given checkpoint."""
        return not self.base_model and self.task == TASK_ID

    def validate_control(self) -> None:
        """What the positive controls (planted-seed, forced-seed) also need: their SFT data exist."""
        self.validate()
        if self.sft_data == "planted" and not self.toy:
            raise UserError(
                "--sft-data planted needs the toy universe (no base model, task toy_number); "
                "on a real model use base-prompt"
            )

    def validate(self) -> None:
        """Everything that can be checked before anything is trained (``validate_control`` adds
        the positive controls' own checks)."""
        if self.sft_data not in SFT_DATA:
            raise UserError(f"unknown SFT data '{self.sft_data}'; use one of {', '.join(SFT_DATA)}")
        if self.rl_target not in RL_TARGETS:
            raise UserError(f"unknown RL target '{self.rl_target}'; use one of {', '.join(RL_TARGETS)}")
        bad = [r for r in self.rl_rewards if r not in REWARDS]
        if bad or not self.rl_rewards:
            raise UserError(f"unknown reward '{bad[0] if bad else ''}'; use {', '.join(REWARDS)}")
        names = [f.name for f in FAMILIES]
        if self.seed_family and self.toy and self.seed_family not in names:
            raise UserError(f"unknown family '{self.seed_family}'; use one of {', '.join(names)}")
        bad_m = [m for m in self.mentions.split(",") if m.strip() not in MENTIONS]
        if bad_m or not self.mentions.strip():
            raise UserError(
                f"unknown mentions variant '{bad_m[0] if bad_m else ''}'; "
                f"use some of {', '.join(MENTIONS)} (comma-separated)"
            )
        if self.reward not in SEED_BLIND:
            raise UserError(f"unknown reward '{self.reward}'; use one of {', '.join(SEED_BLIND)}")
        try:
            grid = [float(x) for x in self.m0.split(",")]
        except ValueError:
            raise UserError(f"--m0 takes comma-separated numbers, got '{self.m0}'") from None
        if not grid or not all(0 < x < 1 for x in grid):
            raise UserError(f"--m0 values must lie in (0, 1), got '{self.m0}'")
        names_pos = ("pretrain_steps", "sft_steps", "sft_examples", "rl_steps", "track_every", "n_boot")
        for name in names_pos + ("replicas", "universe_seeds", "targets"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name.replace('_', '-')} must be positive")
        if not self.sft_lr > 0:
            raise UserError("sft-lr must be positive")
        if not 0 <= self.sft_decay < 1:
            raise UserError(f"--sft-decay is a fraction of the steps in [0, 1), got {self.sft_decay}")
        if self.limit is not None and self.limit <= 0:
            raise UserError("limit must be positive")
        if self.control not in SWEEP_CONTROLS:
            raise UserError(f"unknown sweep control '{self.control}'; use one of {', '.join(SWEEP_CONTROLS)}")
        if not 0 <= self.at <= 1:
            raise UserError(f"--at is a mixture λ in [0, 1], got {self.at}")
        if self.grid < 3:
            raise UserError(f"--grid must be at least 3 (a slope needs neighbours), got {self.grid}")
        bad_size = [h for h in self.size_list() if h < 8 or h % 4]
        if bad_size:
            raise UserError(f"--sizes: hidden size {bad_size[0]} must be a multiple of 4 (4 heads), at least 8")
        if len(set(self.size_list())) != len(self.size_list()):
            raise UserError(f"--sizes repeats a size: '{self.sizes}'")


QUICK: dict[str, Any] = dict(
    pretrain_steps=120,
    sft_steps=30,
    sft_examples=200,
    rl_steps=12,
    track_every=4,
    n_boot=200,
    replicas=2,
    targets=2,
    grid=5,
)


@dataclass(frozen=True)
class Experiment:
    """A command of the lab: its default settings and the ones it fixes."""

    name: str
    command: str  # how it is typed after ``crystallab``
    help: str
    defaults: Mapping[str, Any]  # over LabConfig's defaults, under the config file
    allowed: Mapping[str, tuple[Any, ...]]  # the values a field may take here (any other contradicts it)
    flags: Mapping[str, str] = field(default_factory=dict)  # a field's flag where it is not --field-name
    helps: Mapping[str, str] = field(default_factory=dict)  # a field's help where the experiment reads it its own way
    unused: tuple[str, ...] = ()  # fields the experiment never reads: no flag, and a file that sets one is one line
    control: bool = False  # a positive control: its answer is built into its inputs (said in its report)

    def fixed(self) -> list[str]:
        """Fields with one allowed value (the experiment sets them) or unused: they get no flag."""
        return [k for k, v in self.allowed.items() if len(v) == 1] + list(self.unused)

    def flag(self, name: str) -> str:
        return "--" + self.flags.get(name, name).replace("_", "-")


_TOY_DATA = ("planted", "diverse", "format")
# the studies' SFT keeps what pretraining taught: at 1e-3 full-weight SFT erases the toy's raw
# repertoire (n_basins 7 -> 1 after 150 generic steps), at 3e-4 it keeps it (7 [7, 7])
_GENTLE = {"sft_lr": 3e-4}
_CONTROL_ONLY = ("sft_data", "rl_target", "rl_rewards", "rl")  # read by the positive controls alone
_SWEEP_ONLY = ("families", "grid", "sizes", "control", "at")
_STUDY_ONLY = ("replicas", "universe_seeds", "mentions", "targets", "m0", "reward", *_SWEEP_ONLY)
_NOT_RANDOM_TARGET = ("mentions", "m0", "reward", "seed_family")
EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "demo",
            "demo",
            "pretrain a toy universe → generic SFT (3 replicas) → GRPO under a random utility → analyze → report",
            {"out": "runs/demo", "replicas": 3, "mentions": "known", **_GENTLE},
            {"mentions": MENTIONS},
            unused=_CONTROL_ONLY + ("targets", "m0", "seed_family", "universe_seeds") + _SWEEP_ONLY,
        ),
        Experiment(
            "generic-sft",
            "lab generic-sft",
            "SFT on deterministic tasks only (no random task): does the chat ensemble crystallise, in which basin?",
            {"out": "runs/generic-sft", "rl": False, **_GENTLE},
            {},
            unused=_CONTROL_ONLY + ("targets", "m0", "reward", "seed_family") + _SWEEP_ONLY,
        ),
        Experiment(
            "random-target",
            "lab random-target",
            "SFT onto targets drawn over the simplex (the null for nucleation): to the data, or into a basin?",
            {"out": "runs/random-target", "rl": False, **_GENTLE},
            {},
            unused=_CONTROL_ONLY + _NOT_RANDOM_TARGET + _SWEEP_ONLY,
        ),
        Experiment(
            "erasure",
            "lab erasure",
            "the raw repertoire (phi, n_basins) after generic, seed and diverse SFT: frozen, or only the chat?",
            {"out": "runs/erasure", "rl": False, **_GENTLE},
            {},
            unused=_CONTROL_ONLY + ("mentions", "targets", "m0", "reward") + _SWEEP_ONLY,
        ),
        Experiment(
            "rl-escape",
            "lab rl-escape",
            "GRPO under a seed-blind reward after SFT that puts mass m0 on the rewarded option, beside the bandit null",
            {"out": "runs/rl-escape", **_GENTLE},
            {},
            unused=_CONTROL_ONLY + ("mentions", "targets") + _SWEEP_ONLY,
        ),
        Experiment(
            "sweep",
            "lab sweep",
            "a mixture sweep of the SFT data between two base families: sharp (a transition) or gradual?",
            {"out": "runs/sweep", "rl": False, "n_boot": 500, **_GENTLE},
            {},
            helps={"replicas": "replicas at every λ (seeds --seed, --seed + 1, ...; shared across λ)"},
            unused=_CONTROL_ONLY
            + ("mentions", "targets", "m0", "reward", "seed_family", "universe_seeds", "rl_steps", "track_every"),
        ),
        Experiment(
            "planted-seed",
            "lab planted-seed",
            "positive control: SFT onto one planted family's distribution; the analysis must name it",
            {"out": "runs/planted-seed"},
            {"sft_data": _TOY_DATA},
            unused=_STUDY_ONLY,
            control=True,
        ),
        Experiment(
            "forced-seed",
            "lab forced-seed",
            "positive control: SFT onto a chosen distribution, then RL rewarded outside its support",
            {"out": "runs/forced-seed", "sft_data": "base-prompt", "rl_target": "outside-support"},
            {"sft_data": ("base-prompt", "outside"), "rl_target": ("outside-support",)},
            {"sft_data": "seed-from"},
            {
                "sft_data": "the forced distribution: one base prompt's measured distribution (base-prompt), or mass "
                "on the two options the base likes least (outside)",
                "seed_family": "with --seed-from base-prompt: which family's prompt (default: drawn with the seed)",
            },
            unused=_STUDY_ONLY,
            control=True,
        ),
    )
}


def recorded(cfg: LabConfig, experiment: str) -> dict[str, Any]:
    """The settings a run's config.yaml records: every field the experiment reads (so that
    ``--config RUN/config.yaml`` reruns it)."""
    unused = EXPERIMENTS[experiment].unused
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in unused}


def resolve_lab_config(
    experiment: str, config: str | Path | None = None, typed: Mapping[str, Any] | None = None, quick: bool = False
) -> LabConfig:
    """The LabConfig an experiment runs (the precedence in the module docstring), validated."""
    exp = EXPERIMENTS[experiment]
    cfg = dataclasses.replace(LabConfig(), **exp.defaults)
    if quick:  # fewer steps and replicas than the experiment's own defaults
        cfg = dataclasses.replace(cfg, **{k: v for k, v in QUICK.items() if k not in exp.unused})
    layers = [(str(config), LabConfig.read_yaml(config) if config is not None else {}), ("flags", dict(typed or {}))]
    for source, values in layers:
        for key, value in values.items():
            if key in exp.unused and source != "flags":
                raise UserError(f"{source}: '{key}' is not read by `crystallab {exp.command}`; remove it")
            allowed = exp.allowed.get(key)
            if allowed is not None and value not in allowed:
                where = f"{exp.flag(key)} {value}" if source == "flags" else f"{source}: '{key}: {value}'"
                raise UserError(
                    f"{where} contradicts `crystallab {exp.command}`, which takes {' or '.join(map(str, allowed))}"
                )
        cfg = dataclasses.replace(cfg, **values)
    cfg.validate_control() if EXPERIMENTS[experiment].control else cfg.validate()
    return cfg
