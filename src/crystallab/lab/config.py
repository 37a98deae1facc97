"""The lab's settings (``LabConfig``) and its experiments, light enough for ``crystallab --help``
(no torch, no scipy): the CLI generates its flags from these fields.

One precedence rule: LabConfig's defaults (``--quick``'s when asked), then the experiment's own,
then the config file, then the flags the user typed. An experiment fixes some settings (a
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
from crystallab.lab.universe import FAMILIES, TASK_ID
from crystallab.yamlconf import read_settings

SFT_DATA = ("planted", "base-prompt", "outside", "diverse", "format")
RL_TARGETS = ("seed-top", "outside-support")
REWARDS = ("validity", "target", "diversity")  # the GRPO reward functions (lab/rl.py)


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
    rl_steps: int = _f(40, "GRPO steps")
    track_every: int = _f(10, "measure the prompt set every N training steps")
    lora: bool = _f(False, "train LoRA adapters (peft) instead of all weights")
    limit: int | None = _f(None, "track only N prompts of each kind (default: all)")
    report: bool = _f(True, "write report.html")
    n_boot: int = _f(1000, "bootstrap draws of the analysis")
    base_dir: str | None = _f(
        None,
        "the toy universe's folder: reused when it holds a model, else pretrained "
        "there (default: RUN/checkpoints/base)",
    )
    universe_seed: int | None = _f(None, "seed of the toy universe's pretraining (default: --seed)")

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

    def validate(self) -> None:
        """Everything that can be checked before anything is trained."""
        if self.sft_data not in SFT_DATA:
            raise UserError(f"unknown SFT data '{self.sft_data}'; use one of {', '.join(SFT_DATA)}")
        if self.rl_target not in RL_TARGETS:
            raise UserError(f"unknown RL target '{self.rl_target}'; use one of {', '.join(RL_TARGETS)}")
        bad = [r for r in self.rl_rewards if r not in REWARDS]
        if bad or not self.rl_rewards:
            raise UserError(f"unknown reward '{bad[0] if bad else ''}'; use {', '.join(REWARDS)}")
        if self.sft_data == "planted" and not self.toy:
            raise UserError(
                "--sft-data planted needs the toy universe (no base model, task toy_number); "
                "on a real model use base-prompt"
            )
        names = [f.name for f in FAMILIES]
        if self.seed_family and self.toy and self.seed_family not in names:
            raise UserError(f"unknown family '{self.seed_family}'; use one of {', '.join(names)}")
        for name in ("pretrain_steps", "sft_steps", "sft_examples", "rl_steps", "track_every", "n_boot"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name.replace('_', '-')} must be positive")
        if self.limit is not None and self.limit <= 0:
            raise UserError("limit must be positive")


QUICK = dict(pretrain_steps=120, sft_steps=30, sft_examples=200, rl_steps=12, track_every=4, n_boot=200)


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

    def fixed(self) -> list[str]:
        """Fields with one allowed value: the experiment sets them, so they get no flag."""
        return [k for k, v in self.allowed.items() if len(v) == 1]

    def flag(self, name: str) -> str:
        return "--" + self.flags.get(name, name).replace("_", "-")


_TOY_DATA = ("planted", "diverse", "format")
EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "demo",
            "demo",
            "pretrain → SFT → RL a toy model with phase tracking, then analyze and report",
            {"out": "runs/demo"},
            {"sft_data": _TOY_DATA},
        ),
        Experiment(
            "planted-seed",
            "lab planted-seed",
            "SFT onto one planted family's distribution; the analysis must name it",
            {"out": "runs/planted-seed"},
            {"sft_data": _TOY_DATA},
        ),
        Experiment(
            "forced-seed",
            "lab forced-seed",
            "SFT onto a chosen distribution, then RL rewarded outside its support: can RL escape?",
            {"out": "runs/forced-seed", "sft_data": "base-prompt", "rl_target": "outside-support"},
            {"sft_data": ("base-prompt", "outside"), "rl_target": ("outside-support",)},
            {"sft_data": "seed-from"},
            {
                "sft_data": "the forced distribution: one base prompt's measured distribution (base-prompt), or mass "
                "on the two options the base likes least (outside)",
                "seed_family": "with --seed-from base-prompt: which family's prompt (default: drawn with the seed)",
            },
        ),
    )
}


def resolve_lab_config(
    experiment: str, config: str | Path | None = None, typed: Mapping[str, Any] | None = None, quick: bool = False
) -> LabConfig:
    """The LabConfig an experiment runs (the precedence in the module docstring), validated."""
    exp = EXPERIMENTS[experiment]
    cfg = dataclasses.replace(LabConfig.quick() if quick else LabConfig(), **exp.defaults)
    layers = [(str(config), LabConfig.read_yaml(config) if config is not None else {}), ("flags", dict(typed or {}))]
    for source, values in layers:
        for key, value in values.items():
            allowed = exp.allowed.get(key)
            if allowed is not None and value not in allowed:
                where = f"{exp.flag(key)} {value}" if source == "flags" else f"{source}: '{key}: {value}'"
                raise UserError(
                    f"{where} contradicts `crystallab {exp.command}`, which takes {' or '.join(map(str, allowed))}"
                )
        cfg = dataclasses.replace(cfg, **values)
    cfg.validate()
    return cfg
