"""One definition of each setting, one precedence rule (issue 12, deliverables 2 and 5): the flags
are generated from the dataclasses' fields, and every command resolves dataclass defaults, then
its config file, then the flags the user typed. Nothing here trains or loads a model."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from crystallab.cli.flags import add_dataclass_flags, dataclass_from_args, flag_dests, typed_fields
from crystallab.cli.lab import NOT_FIELDS, lab_config
from crystallab.cli.main import build_parser, main
from crystallab.cli.measure import measure_config
from crystallab.errors import UserError
from crystallab.lab.config import EXPERIMENTS, QUICK, LabConfig, resolve_lab_config
from crystallab.ladder import RayOptions, preset_names
from crystallab.measuring import MeasureConfig, MeasureSettings
from crystallab.models.base import METHODS, LoadSettings
from crystallab.runconfig import plain, write_config
from crystallab.store import STAGES

PARSER = build_parser()


def parse(*argv: str) -> argparse.Namespace:
    return PARSER.parse_args([str(a) for a in argv])


def subparser(*names: str) -> argparse.ArgumentParser:
    """The parser of ``crystallab NAME [NAME]``."""
    p: argparse.ArgumentParser = PARSER
    for name in names:
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[name]
    return p


# ---- flags generated from the dataclasses ----------------------------------------------------

# a non-default value for every LoadSettings / MeasureSettings field, and how it is typed
LOAD = {
    "dtype": "bfloat16",
    "device": "auto",
    "device_map": "auto",
    "revision": "v2",
    "trust_remote_code": True,
    "allow_pickle": True,
    "allow_plain_chat": False,
}
SETTINGS = {
    "prompts": "chat",
    "method": "sample",
    "samples": 7,
    "seed": 11,
    "parser": "tokens",
    "limit": 3,
    "batch_tokens": 1024,
}
CONFIG = {
    "model": "m/x",
    "tasks": ["coin_flip", "number_1_10"],
    "out": "o",
    "label": "lab",
    "stage": "sft",
    "parent": "base",
    "step": 5,
    "replica": 2,
    "tasks_dir": "td",
    "chunk": 4,
    "progress": False,
}


def as_flags(values: dict, names: dict[str, str] | None = None) -> list[str]:
    """Command-line words that type ``values`` (field name → value) as generated flags."""
    out = []
    for k, v in values.items():
        flag = "--" + (names or {}).get(k, k).replace("_", "-")
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + flag[2:])
        elif isinstance(v, (list, tuple)):
            out += [flag, ",".join(map(str, v))]
        else:
            out += [flag, str(v)]
    return out


MEASURE_NAMES = {"tasks": "task", "allow_plain_chat": "plain-chat"}


def test_every_load_and_measure_setting_has_a_flag():
    for cmd in ("measure", "ladder"):
        dests = flag_dests(subparser(cmd))
        for cls in (LoadSettings, MeasureSettings):
            for f in dataclasses.fields(cls):
                flag = "--" + MEASURE_NAMES.get(f.name, f.name).replace("_", "-")
                assert dests.get(flag) == f.name, (cmd, flag)


def test_existing_flag_names_still_work():
    args = parse(
        "measure",
        "--model",
        "m",
        "--task",
        "coin_flip",
        "--out",
        "o",
        "--trust-remote-code",
        "--allow-pickle",
        "--device-map",
        "auto",
        "--batch-tokens",
        "64",
        "--dtype",
        "float16",
        "--device",
        "cuda",
        "--revision",
        "r1",
        "--method",
        "sample",
        "--samples",
        "9",
        "--parser",
        "tokens",
        "--seed",
        "4",
        "--limit",
        "2",
        "--prompts",
        "raw",
        "--no-plain-chat",
    )
    cfg = measure_config(args)
    assert cfg.load == LoadSettings(
        dtype="float16",
        device="cuda",
        device_map="auto",
        revision="r1",
        trust_remote_code=True,
        allow_pickle=True,
        allow_plain_chat=False,
    )
    assert cfg.settings == MeasureSettings(
        prompts="raw", method="sample", samples=9, seed=4, parser="tokens", limit=2, batch_tokens=64
    )


def test_measure_flags_round_trip_every_field():
    args = parse("measure", *as_flags({**CONFIG, **LOAD, **SETTINGS}, MEASURE_NAMES))
    cfg = measure_config(args)
    assert cfg == MeasureConfig(**CONFIG, load=LoadSettings(**LOAD), settings=MeasureSettings(**SETTINGS))
    assert cfg != MeasureConfig(model="m/x", tasks=["coin_flip", "number_1_10"], out="o")  # really non-default


def test_repeated_list_flags_extend():
    # `--task a --task b` measured only b before (argparse's store keeps the last value)
    args = parse("measure", "--model", "m", "--task", "coin_flip", "--task", "number_1_10,animal", "--out", "o")
    assert measure_config(args).tasks == ["coin_flip", "number_1_10", "animal"]
    args = parse(
        "measure", "--model", "m", "--task", "coin_flip", "--out", "o", "--temperature", "0.5", "--temperature", "1"
    )
    assert measure_config(args).settings.temperature == (0.5, 1.0)


def test_untyped_flags_are_absent():
    args = parse("measure", "--model", "m", "--task", "coin_flip", "--out", "o")
    assert typed_fields(LoadSettings, args) == {} and typed_fields(MeasureSettings, args) == {}
    assert measure_config(args) == MeasureConfig(model="m", tasks=["coin_flip"], out="o")


def test_flag_machinery_on_any_dataclass():
    @dataclasses.dataclass(frozen=True)
    class S:
        n: int = 1
        x: float | None = None
        tags: tuple[str, ...] = ("a",)
        on: bool = False
        meta: dict = dataclasses.field(default_factory=dict)  # no flag: not a command-line type

    p = argparse.ArgumentParser()
    assert add_dataclass_flags(p, S) == ["--n", "--x", "--tags", "--on"]
    args = p.parse_args(["--x", "0.5", "--tags", "b,c", "--on"])
    assert dataclass_from_args(S, args) == S(x=0.5, tags=("b", "c"), on=True)
    assert dataclass_from_args(S, p.parse_args([]), S(n=3)) == S(n=3)


def test_one_definition_of_stages_methods_and_presets():
    def choices(p: argparse.ArgumentParser, flag: str):
        return next(a.choices for a in p._actions if flag in a.option_strings)

    assert tuple(choices(subparser("measure"), "--stage")) == STAGES
    assert tuple(choices(subparser("measure"), "--method")) == METHODS
    assert tuple(choices(subparser("analyze"), "--method")) == METHODS
    preset_help = next(a.help for a in subparser("ladder")._actions if "--preset" in a.option_strings)
    assert all(name in preset_help for name in preset_names())


def test_ray_flags_come_from_ray_options():
    args = parse("ladder", "l.yaml", "--task", "coin_flip", "--out", "o", "--ray", "auto", "--max-retries", "5")
    ray = dataclass_from_args(RayOptions, args, RayOptions(address=args.ray))
    assert ray == RayOptions(address="auto", max_retries=5)


# ---- measure --config: defaults, then the file, then typed flags ------------------------------


def test_measure_config_file_keeps_every_value(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text(yaml.safe_dump({**CONFIG, **LOAD, **SETTINGS}))
    cfg = measure_config(parse("measure", "--config", f))
    assert cfg == MeasureConfig(**CONFIG, load=LoadSettings(**LOAD), settings=MeasureSettings(**SETTINGS))
    # a typed flag beats the file; the flags not typed leave the file's values alone
    cfg2 = measure_config(parse("measure", "--config", f, "--samples", "50", "--plain-chat", "--task", "coin_flip"))
    assert cfg2.settings.samples == 50 and cfg2.load.allow_plain_chat is True and cfg2.tasks == ["coin_flip"]
    assert cfg2.settings.method == "sample" and cfg2.load.dtype == "bfloat16" and cfg2.chunk == 4


def test_measure_written_config_is_a_valid_config(tmp_path):
    cfg = MeasureConfig(**CONFIG, load=LoadSettings(**LOAD), settings=MeasureSettings(**SETTINGS))
    path = write_config(tmp_path, cfg, "measure")
    assert path == tmp_path / "config.yaml" and "crystallab measure --config" in path.read_text()
    assert measure_config(parse("measure", "--config", path)) == cfg


@pytest.mark.parametrize(
    "text,needle",
    [
        ("samplez: 5\n", "did you mean 'samples'"),
        ("samples: many\n", "'samples': expected a whole number"),
        ("load: [1]\n", "'load': expected a mapping"),
        ("load: {dtpye: auto}\n", "unknown measure setting 'load.dtpye'"),
    ],
)
def test_measure_config_file_errors_are_one_line(tmp_path, text, needle):
    f = tmp_path / "m.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as e:
        measure_config(parse("measure", "--config", f, "--model", "m", "--task", "coin_flip", "--out", "o"))
    assert needle in str(e.value) and str(f) in str(e.value) and "\n" not in str(e.value)


def test_measure_needs_model_task_and_out(capsys):
    assert main(["measure", "--model", "m"]) == 2
    assert "needs --task and --out" in capsys.readouterr().err


# ---- the lab: defaults, the experiment's, the file, typed flags --------------------------------

# for each experiment: every LabConfig field it reads set to a non-default value it allows
LAB_FILES = {
    "planted-seed": dict(sft_data="diverse", rl_target="outside-support"),
    "forced-seed": dict(sft_data="outside", rl_target="outside-support"),
}
COMMON = dict(
    out="elsewhere/run",
    seed=7,
    seed_family="fam-a",
    rl=False,
    rl_rewards=["validity", "diversity"],
    base_model="builtin:gemma-3-270m",
    task="number_1_10",
    pretrain_steps=11,
    sft_steps=12,
    sft_examples=13,
    sft_lr=0.002,
    sft_decay=0.3,
    rl_steps=14,
    track_every=3,
    lora=True,
    limit=5,
    report=False,
    n_boot=99,
    base_dir="u/base",
    universe_seed=42,
    replicas=4,
    universe_seeds=2,
    mentions="none",
    targets=3,
    m0="0.05,0.2",
    reward="diversity",
    families="qa,code",
    grid=7,
    sizes="32,64",
    control="steps",
    at=0.5,
)


def command(experiment: str) -> list[str]:
    return EXPERIMENTS[experiment].command.split()


def lab_file(experiment: str) -> dict:
    """Every field the experiment reads, at a value that is not its default."""
    exp = EXPERIMENTS[experiment]
    data = {k: v for k, v in {**COMMON, **LAB_FILES.get(experiment, {})}.items() if k not in exp.unused}
    if experiment == "demo":
        data["mentions"] = "none"  # the demo's own default is known
    return data


def test_lab_file_values_cover_every_field():
    names = {f.name for f in dataclasses.fields(LabConfig)}
    for exp in EXPERIMENTS:
        data = lab_file(exp)
        assert set(data) == names - set(EXPERIMENTS[exp].unused), exp
        default = dataclasses.replace(LabConfig(), **EXPERIMENTS[exp].defaults)
        same = [k for k in data if getattr(default, k) == (tuple(data[k]) if isinstance(data[k], list) else data[k])]
        # every value differs from the default, but for what the experiment fixes
        assert same == [k for k in EXPERIMENTS[exp].fixed() if k in data], (exp, same)


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_lab_config_file_keeps_every_value(tmp_path, experiment):
    data = lab_file(experiment)
    f = tmp_path / "lab.yaml"
    f.write_text(yaml.safe_dump(data))
    exp = EXPERIMENTS[experiment]
    base = dataclasses.replace(LabConfig(), **exp.defaults)
    want = dataclasses.replace(
        base, **{**data, **({"rl_rewards": tuple(data["rl_rewards"])} if "rl_rewards" in data else {})}
    )
    assert lab_config(parse(*command(experiment), "--config", f)) == want
    # --quick changes only the defaults: the file still wins
    assert lab_config(parse(*command(experiment), "--config", f, "--quick")) == want
    # a typed flag beats the file
    if exp.control:
        sft = "--seed-from" if experiment == "forced-seed" else "--sft-data"
        flags = ["--seed", "3", "--rl", "--sft-steps", "2", sft, data["sft_data"], "--rl-rewards", "target"]
        changes = dict(seed=3, rl=True, sft_steps=2, rl_rewards=("target",))
    else:
        flags = ["--seed", "3", "--sft-steps", "2", "--replicas", "6"]
        changes = dict(seed=3, sft_steps=2, replicas=6)
    typed = lab_config(parse(*command(experiment), "--config", f, *flags))
    assert typed == dataclasses.replace(want, **changes)
    # the written config of the run reproduces it
    path = write_config(
        tmp_path / "run", {k: v for k, v in dataclasses.asdict(want).items() if k not in exp.unused}, exp.command
    )
    assert lab_config(parse(*command(experiment), "--config", path)) == want


def test_forced_seed_keeps_the_files_sft_data(tmp_path):
    """The bug: `lab forced-seed --config X` with the file's sft_data ran base-prompt, because
    --seed-from had a default that was passed over the file."""
    f = tmp_path / "lab.yaml"
    f.write_text("sft_data: outside\n")
    cfg = lab_config(parse("lab", "forced-seed", "--config", f))
    assert cfg.sft_data == "outside" and cfg.rl_target == "outside-support" and cfg.out == "runs/forced-seed"
    typed = lab_config(parse("lab", "forced-seed", "--config", f, "--seed-from", "base-prompt"))
    assert typed.sft_data == "base-prompt"


@pytest.mark.parametrize(
    "experiment,text,needle",
    [
        ("forced-seed", "sft_data: format\n", "'sft_data: format' contradicts `crystallab lab forced-seed`"),
        ("forced-seed", "rl_target: seed-top\n", "'rl_target: seed-top' contradicts"),
        ("planted-seed", "sft_data: outside\n", "contradicts `crystallab lab planted-seed`, which takes planted or"),
        ("demo", "sft_data: base-prompt\n", "'sft_data' is not read by `crystallab demo`"),
    ],
)
def test_a_key_contradicting_the_experiment_is_one_line(tmp_path, capsys, experiment, text, needle):
    f = tmp_path / "lab.yaml"
    f.write_text(text)
    with pytest.raises(UserError, match=None) as e:
        lab_config(parse(*command(experiment), "--config", f))
    assert needle in str(e.value) and str(f) in str(e.value)
    assert main([*command(experiment), "--config", str(f), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "run").exists()  # refused before anything ran


def test_lab_config_validates_before_training(tmp_path):
    with pytest.raises(UserError, match="planted needs the toy universe"):
        resolve_lab_config("planted-seed", typed={"base_model": "builtin:gemma-3-270m"})
    with pytest.raises(UserError, match="unknown reward 'validty'"):
        lab_config(parse("lab", "planted-seed", "--rl-rewards", "validty"))
    with pytest.raises(UserError, match="unknown family"):
        lab_config(parse("lab", "erasure", "--family", "dise"))
    with pytest.raises(UserError, match="unknown mentions variant 'all'"):
        lab_config(parse("lab", "generic-sft", "--mentions", "all"))


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_every_lab_flag_is_a_field_and_back(experiment):
    p = subparser(*command(experiment))
    dests = flag_dests(p)
    fields = {f.name for f in dataclasses.fields(LabConfig)}
    exp = EXPERIMENTS[experiment]
    extra = {"--seeds"} if experiment == "planted-seed" else set()
    for flag, dest in dests.items():
        if flag in NOT_FIELDS or flag in extra or flag == "--help":
            continue
        assert dest in fields, (flag, dest)
    flagged = {d for d in dests.values()}
    assert fields - flagged == set(exp.fixed()), experiment  # every field has a flag but what the experiment fixes
    assert {f for f in dests if dests[f] not in fields} <= {*NOT_FIELDS, *extra, "--help"}


def test_quick_is_only_a_defaults_layer():
    cfg = lab_config(parse("demo", "--quick"))
    demo = EXPERIMENTS["demo"]
    quick = {k: v for k, v in QUICK.items() if k not in demo.unused}  # over the demo's own defaults
    assert cfg == dataclasses.replace(LabConfig(), **{**demo.defaults, **quick})
    assert cfg.replicas == QUICK["replicas"] and cfg.mentions == "known" and cfg.targets == LabConfig().targets
    assert lab_config(parse("demo", "--quick", "--sft-steps", "9")).sft_steps == 9


def test_written_lab_config_is_plain_yaml(tmp_path):
    path = write_config(tmp_path, LabConfig(out="x"), "demo")
    data = yaml.safe_load(path.read_text())
    assert data == plain(LabConfig(out="x")) and data["rl_rewards"] == ["validity", "target"]


def test_verbose_before_or_after_the_command():
    assert parse("-v", "demo").verbose is True
    assert parse("demo", "-v").verbose is True
    assert parse("lab", "forced-seed", "--verbose").verbose is True
    assert parse("demo").verbose is False


def test_shipped_lab_configs_resolve_for_forced_seed():
    for c in sorted((Path(__file__).parents[2] / "configs").glob("*.yaml")):
        if "study" in c.name:  # the non-circular studies' settings
            cfg = lab_config(parse("lab", "generic-sft", "--config", c))
            assert cfg.base_model and cfg.lora and cfg.out == "runs/generic-sft"
            continue
        if "sweep" in c.name:
            cfg = lab_config(parse("lab", "sweep", "--config", c))
            assert cfg.base_model and cfg.lora and (cfg.grid, cfg.replicas) == (5, 3) and cfg.out == "runs/sweep"
            continue
        cfg = lab_config(parse("lab", "forced-seed", "--config", c))
        assert cfg.base_model and cfg.sft_data == "base-prompt" and cfg.out == yaml.safe_load(c.read_text())["out"]


# ---- the console -------------------------------------------------------------------------------


def test_console_stage_lines_and_the_log_file(tmp_path):
    import io
    import logging
    import warnings

    from crystallab.console import Console

    for verbose in (False, True):
        stream = io.StringIO()
        c = Console(verbose=verbose, stream=stream, interactive=False)
        log = tmp_path / f"v{verbose}" / "x.log"
        with c.logging_to(log):
            with c.stage("sft", total=3) as st:
                st.advance()
                c.debug("a detail")
                logging.getLogger("transformers.trainer").warning("library chatter")
                warnings.warn(f"deprecated thing {verbose}", FutureWarning, stacklevel=1)
        shown = stream.getvalue().splitlines()
        assert shown[-1].startswith("sft … ") and sum(" … " in s for s in shown) == 1  # printed once, even with -v
        noise = [s for s in shown if "a detail" in s or "library chatter" in s or "FutureWarning" in s]
        assert len(noise) == (3 if verbose else 0), shown
        text = log.read_text()
        assert "a detail" in text and "library chatter" in text and f"FutureWarning: deprecated thing {verbose}" in text
        assert "sft … " in text


def test_console_draws_a_bar_on_a_terminal(tmp_path):
    import io

    from crystallab.console import Console

    stream = io.StringIO()
    c = Console(stream=stream, interactive=True)
    with c.stage("rl", total=2) as st:
        st.advance()
        st.advance()
        st.note = "→ here"
    assert stream.getvalue().splitlines()[-1].startswith("rl … ") and stream.getvalue().rstrip().endswith("→ here")


def test_console_is_quiet_in_ci(monkeypatch):
    from crystallab.console import is_interactive

    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("CI", raising=False)
    assert is_interactive(Tty())
    monkeypatch.setenv("CI", "1")
    assert not is_interactive(Tty())


# ---- the planted-seed tally lives in the lab, not the CLI ---------------------------------------


def test_run_seeds_shares_one_universe_and_tallies(tmp_path, monkeypatch):
    import json

    import crystallab.lab.experiments as E

    seen = []

    def fake_run_lab(cfg, log=None, console=None, experiment="demo"):
        seen.append(cfg)
        named = "dice" if cfg.seed % 2 == 0 else "lucky"
        return {
            "config": dataclasses.asdict(cfg),
            "planted_family": "dice",
            "named_family": named,
            "seed_named_correctly": named == "dice",
            "nucleation": {"z_k_star": [0.5, 0.4, 0.6], "seed_p": 0.001},
            "verdicts": {"nucleation": "holds" if named == "dice" else "fails"},
        }

    monkeypatch.setattr(E, "run_lab", fake_run_lab)
    cfg = lab_config(parse("lab", "planted-seed", "--out", tmp_path / "p", "--seed", "4"))
    done = E.run_seeds(cfg, 3, E.Console(stream=__import__("io").StringIO(), interactive=False))
    assert [c.seed for c in seen] == [4, 5, 6] and {c.universe_seed for c in seen} == {4}
    assert {c.base_dir for c in seen} == {str(tmp_path / "p" / "universe")}
    assert [c.out for c in seen] == [str(tmp_path / "p" / f"seed-{k}") for k in (4, 5, 6)]
    t = done["tally"]
    assert t["named_correctly"] == 2 and t["confirmed"] == 2 and t["seeds"] == 3
    assert json.loads((tmp_path / "p" / "tally.json").read_text())["named_correctly"] == 2
    assert "k* was the planted family in 2 of 3 seeds" in E.tally_text(t)
    with pytest.raises(UserError, match="--seeds must be positive"):
        E.run_seeds(cfg, 0)
