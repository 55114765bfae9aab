"""Interpretation for reports (classification, QA): attention maps, a 2-D projection of the pooled
representations, token attributions. Written into `plots/` and the report by `run_report`.

- Attention maps are NOT taken from the training path: `SelfAttention` runs PyTorch's fused
  `scaled_dot_product_attention`, which never materialises the probabilities. `attention_maps` runs
  the backbone once in eval mode with forward pre-hooks that capture each attention module's
  inputs (x, mask, rotary cos/sin) and recomputes softmax(q k^T * scale + mask) from the module's own
  `c_attn` weights, outside the module (grouped-query heads repeated, rotary positions applied,
  causal or padding masks, additive biases such as T5's relative positions). Training is unchanged.
- Projection: the pooled vector the head reads (classification) or the first token's hidden state
  (QA) of up to `projection_max` test examples, by PCA (torch SVD); by t-SNE too when scikit-learn
  is importable (`projection: tsne|auto`), otherwise PCA only and the report says so.
- Attributions: gradient x input on the word embeddings (the output of `backbone.wte`), or
  integrated gradients from a zero baseline (= the padding token's embedding, which stays zero)
  in `ig_steps` Riemann (midpoint) steps; per token the sum over the embedding channels.

What a task explains comes from its `interpret_probe()` hook (a `Probe`): nothing here switches on task names.
"""
from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lit_llm.errors import ConfigError
from lit_llm.models.layers import SelfAttention, apply_rope, padding_bias, window_keep

PROJECTIONS = ("pca", "tsne", "auto")
ATTRIBUTIONS = ("grad_x_input", "integrated_gradients")
ATTENTION_VIEWS = ("heads", "mean", "both")
DEFAULTS = {"enabled": True, "examples": 3, "max_tokens": 48, "projection": "auto", "projection_max": 2000,
            "attributions": "grad_x_input", "ig_steps": 16, "attention": "both"}


@dataclass
class Probe:
    """What a task lets the report explain, for one test split.

    dataset / collate: the split's tokenized features and the data module's collator;
    feature_of: per example record (the rows of `report_examples`), the feature index to show;
    scores / score_name: per record, higher = better (the ranking of the report's worst/best examples);
    groups / group_name: per record, the colour in the projection (the label; QA: answered correctly);
    outputs: batch -> (pooled [B, C], target [B]): the representation to project and the scalar the
    attributions explain (e.g. the predicted class's logit); token_names: ids -> token strings."""

    split: str
    dataset: Any
    collate: Callable
    feature_of: Sequence[int]
    scores: Sequence[float]
    score_name: str
    groups: Sequence[str]
    group_name: str
    target_name: str
    outputs: Callable[[dict], tuple[torch.Tensor, torch.Tensor]]
    token_names: Callable[[Sequence[int]], list[str]]
    embedding: torch.nn.Module  # the word embedding (backbone.wte): attributions are on its output


def interpret_settings(settings: Any) -> dict:
    """`report.interpret` merged over DEFAULTS, checked."""
    s = {**DEFAULTS, **dict(settings or {})}
    unknown = set(s) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"report.interpret: unknown keys {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    for key in ("examples", "max_tokens", "ig_steps", "projection_max"):
        if isinstance(s[key], bool) or not isinstance(s[key], int) or s[key] < 1:
            raise ConfigError(f"report.interpret.{key}={s[key]!r} must be a positive integer")
    for key, choices in (("projection", PROJECTIONS), ("attributions", ATTRIBUTIONS), ("attention", ATTENTION_VIEWS)):
        if s[key] not in choices:
            raise ConfigError(f"report.interpret.{key}={s[key]!r} is not one of {list(choices)}")
    return s


# -- attention maps, recomputed outside the fused kernel ---------------------------------------
def attention_probs(attn: SelfAttention, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    rope=None, kv_cache=None, layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The probabilities [B, n_head, T, T] that `attn(x, attention_mask, rope)` uses, and its values
    [B, n_head, T, head_dim] (grouped-query heads repeated), in float32. Masked keys get exactly 0."""
    if kv_cache is not None:
        raise ValueError("attention maps are computed on whole sequences, without a KV cache")
    B, T, _ = x.shape
    q, k, v = attn.c_attn(x).float().split(attn.qkv_sizes, dim=2)
    q = q.view(B, T, attn.n_head, attn.head_dim).transpose(1, 2)
    k, v = (t.view(B, T, attn.n_kv_head, attn.head_dim).transpose(1, 2) for t in (k, v))
    if rope is not None:
        cos, sin = (r.float() for r in rope)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if attn.n_kv_head != attn.n_head:
        k, v = (t.repeat_interleave(attn.n_head // attn.n_kv_head, dim=1) for t in (k, v))
    scale = 1.0 / math.sqrt(attn.head_dim) if attn.scale is None else attn.scale
    scores = (q @ k.transpose(-2, -1)) * scale
    keep = torch.ones(T, T, dtype=torch.bool, device=x.device)
    if attn.causal and attention_mask is None:
        keep = keep.tril()
    elif attention_mask is not None and attention_mask.dim() == 2:
        keep = keep & attention_mask.to(torch.bool)[:, None, None, :]
        scores = scores + padding_bias(attention_mask, torch.float32)
    elif attention_mask is not None:  # an additive bias (the encoder's padding bias, T5's relative positions)
        bias = attention_mask.float()
        scores = scores + bias.clamp(min=torch.finfo(torch.float32).min)
        keep = keep & (bias > torch.finfo(bias.dtype).min / 2)
    if attn.window is not None:  # model.attention_window: the layer's own band rule
        pos = torch.arange(T, device=x.device)
        keep = keep & window_keep(pos, pos, attn.window, attn.causal)
    probs = scores.masked_fill(~keep, torch.finfo(torch.float32).min).softmax(-1)
    # an all-masked row (an all-pad sequence) stays uniform, as in SDPA; other masked keys are exactly 0
    probs = torch.where(keep.any(-1, keepdim=True), probs.masked_fill(~keep, 0.0), probs)
    return probs, v


def attention_modules(backbone: torch.nn.Module) -> list[SelfAttention]:
    """The backbone's self-attention modules in layer order."""
    return [m for m in backbone.modules() if isinstance(m, SelfAttention)]


def attention_maps(backbone: torch.nn.Module, run: Callable[[], Any], check: bool = False) -> list[torch.Tensor]:
    """[B, n_head, T, T] per layer while `run()` runs the backbone (in eval mode, without gradients).
    check=True also asserts that the recomputed probabilities times the values, through `c_proj`,
    give the module's own (SDPA) output."""
    maps: list[torch.Tensor] = []
    signature = inspect.signature(SelfAttention.forward)

    def pre_hook(module, args, kwargs):
        bound = signature.bind(module, *args, **kwargs)
        bound.apply_defaults()
        a = dict(bound.arguments)
        a.pop("self")
        probs, v = attention_probs(module, **a)
        maps.append(probs)
        module._interpret_y = (probs @ v) if check else None

    def post_hook(module, args, output):
        y = module._interpret_y
        if y is not None:
            B, H, T, D = y.shape
            mine = module.c_proj(y.transpose(1, 2).reshape(B, T, H * D).to(output.dtype))
            torch.testing.assert_close(mine, output, rtol=1e-4, atol=1e-5)
        del module._interpret_y

    modules = attention_modules(backbone)
    handles = [h for m in modules for h in (m.register_forward_pre_hook(pre_hook, with_kwargs=True),
                                             m.register_forward_hook(post_hook))]
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
        backbone.train(was_training)
    return maps


# -- attributions ------------------------------------------------------------------------------
def token_attributions(probe: Probe, batch: dict, method: str = "grad_x_input", steps: int = 16) -> torch.Tensor:
    """[B, T] attribution of every token to `probe.outputs(batch)[1]` (the explained scalar of each row):
    gradient x input on the word embeddings, or integrated gradients from a zero embedding (midpoint
    rule, `steps` points; their sum over tokens approaches target(x) - target(zero embeddings))."""
    embedded: dict[str, torch.Tensor] = {}
    alpha = {"value": 1.0}

    def hook(module, args, output):
        e = output.detach()
        embedded["input"] = e
        embedded["scaled"] = (alpha["value"] * e).requires_grad_(True)
        return embedded["scaled"]

    handle = probe.embedding.register_forward_hook(hook)
    alphas = [1.0] if method == "grad_x_input" else [(i + 0.5) / steps for i in range(steps)]
    total = None
    try:
        with torch.enable_grad():
            for a in alphas:
                alpha["value"] = a
                _, target = probe.outputs(batch)
                (grad,) = torch.autograd.grad(target.sum(), embedded["scaled"])
                total = grad if total is None else total + grad
    finally:
        handle.remove()
    return (total / len(alphas) * embedded["input"]).sum(-1).detach().float()


# -- the report's part ---------------------------------------------------------------------------
def _device_batch(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _pooled(probe: Probe, device, limit: int, batch_size: int = 64) -> tuple[torch.Tensor, list[int]]:
    records = list(range(min(limit, len(probe.feature_of))))
    out = []
    with torch.no_grad():
        for lo in range(0, len(records), batch_size):
            batch = probe.collate([probe.dataset[probe.feature_of[r]] for r in records[lo:lo + batch_size]])
            out.append(probe.outputs(_device_batch(batch, device))[0].float().cpu())
    return torch.cat(out), records


def pca_2d(x: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """The first two principal components of the rows of x, and the share of variance each explains."""
    x = x.double() - x.double().mean(0)
    _, s, vt = torch.linalg.svd(x, full_matrices=False)
    var = s ** 2
    share = (var[:2] / var.sum().clamp(min=1e-30)).tolist()
    z = x @ vt[:2].T
    if z.shape[1] < 2:
        z = torch.cat([z, torch.zeros(len(z), 2 - z.shape[1], dtype=z.dtype)], 1)
    return z.float(), share


def _selected(probe: Probe, k: int) -> list[tuple[str, int, int]]:
    """(which, rank, record) of the worst and best k, ordered as `report.extremes` orders them."""
    order = sorted(range(len(probe.scores)), key=lambda i: (probe.scores[i], i))
    return [("worst", r + 1, i) for r, i in enumerate(order[:k])] + \
           [("best", r + 1, i) for r, i in enumerate(order[::-1][:k])]


def write_interpretation(task, out_dir: Path, settings: Any) -> dict | None:
    """Plots in out_dir/plots and the report's "interpretation" entry, or None when the task has no probe."""
    s = interpret_settings(settings)
    hook = getattr(task, "interpret_probe", None)
    if not s["enabled"] or hook is None:
        return None
    probe = hook()
    if probe is None or not len(probe.feature_of):
        return None
    started = time.time()
    out_dir, device = Path(out_dir), next(task.parameters()).device
    was_training = task.training
    task.eval()
    plots: dict[str, str] = {}
    notes: list[str] = []
    rows = []
    timing = {"attention_s": 0.0, "attributions_s": 0.0, "projection_s": 0.0}
    try:
        for which, rank, record in _selected(probe, s["examples"]):
            t0 = time.time()
            batch = _device_batch(probe.collate([probe.dataset[probe.feature_of[record]]]), device)
            tokens = probe.token_names(batch["input_ids"][0].tolist())
            maps = attention_maps(task.backbone, lambda b=batch: probe.outputs(b))
            maps = torch.stack([m[0] for m in maps]).cpu()  # [L, H, T, T]
            name = f"{probe.split}_{which}{rank}"
            title = f"{which} #{rank} ({probe.score_name} {probe.scores[record]:.3f})"
            if s["attention"] in ("heads", "both"):
                path = f"plots/attention_{name}.png"
                attention_grid(maps, tokens, s["max_tokens"], title, out_dir / path)
                plots[f"attention {which} #{rank} (layers x heads)"] = path
            if s["attention"] in ("mean", "both"):
                path = f"plots/attention_{name}_mean.png"
                attention_grid(maps.mean(1, keepdim=True), tokens, s["max_tokens"],
                                      title + ", mean over heads", out_dir / path)
                plots[f"attention {which} #{rank} (mean over heads)"] = path
            t1 = time.time()
            attr = token_attributions(probe, batch, s["attributions"], s["ig_steps"])[0].cpu()
            timing["attention_s"] += t1 - t0
            timing["attributions_s"] += time.time() - t1
            top = attr.abs().argsort(descending=True)[:5].tolist()
            rows.append({"which": which, "rank": rank, "record": record, "score": round(float(probe.scores[record]), 6),
                         "tokens": tokens, "attributions": [round(float(a), 6) for a in attr],
                         "top": [[tokens[i], round(float(attr[i]), 4)] for i in top]})
        path = f"plots/attributions_{probe.split}.png"
        attribution_strips(rows, s["max_tokens"], f"{s['attributions']} → {probe.target_name}", out_dir / path)
        plots["token attributions"] = path
        t0 = time.time()
        projection = _projection(probe, s, device, out_dir, plots, notes)
        timing["projection_s"] = time.time() - t0
    finally:
        task.train(was_training)
    return {"split": probe.split, "settings": s, "plots": plots, "projection": projection,
            "attributions": {"method": s["attributions"], "target": probe.target_name,
                             "ig_steps": s["ig_steps"] if s["attributions"] == "integrated_gradients" else None,
                             "examples": [{k: v for k, v in r.items() if k not in ("tokens", "attributions")}
                                          for r in rows]},
            "attention": "recomputed outside SDPA from each layer's q/k projections (eval mode)",
            "notes": notes, "wall_s": round(time.time() - started, 2),
            "timing": {k: round(v, 2) for k, v in timing.items()}}


def _projection(probe: Probe, s: dict, device, out_dir: Path, plots: dict, notes: list) -> dict:
    pooled, records = _pooled(probe, device, s["projection_max"])
    groups = [probe.groups[r] for r in records]
    z, share = pca_2d(pooled)
    path = f"plots/projection_{probe.split}_pca.png"
    scatter(z, groups, probe.group_name,
                   f"PCA of pooled representations ({len(records)} examples; "
                   f"PC1 {share[0]:.0%}, PC2 {share[1] if len(share) > 1 else 0:.0%})", out_dir / path)
    plots["projection (PCA)"] = path
    methods = ["pca"]
    if s["projection"] in ("tsne", "auto"):
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            notes.append("t-SNE skipped: scikit-learn is not installed (PCA only)")
        else:
            perplexity = float(min(30, max(2, (len(records) - 1) // 3)))
            zt = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(pooled.double().numpy())
            path = f"plots/projection_{probe.split}_tsne.png"
            scatter(torch.as_tensor(zt), groups, probe.group_name,
                           f"t-SNE of pooled representations ({len(records)} examples)", out_dir / path)
            plots["projection (t-SNE)"] = path
            methods.append("tsne")
    return {"methods": methods, "examples": len(records), "colour": probe.group_name,
            "pca_variance_share": [round(v, 4) for v in share]}


# -- plots ---------------------------------------------------------------------------------------
def _short(token: str, n: int = 12) -> str:
    token = token.replace("\n", "\\n")
    return token if len(token) <= n else token[: n - 1] + "…"


def attention_grid(maps: torch.Tensor, tokens: list[str], max_tokens: int, title: str, path: Path) -> Path:
    """maps [L, H, T, T] -> a grid of layers (rows) x heads (columns), the first `max_tokens` queries
    (y) and keys (x), token names on the outer axes."""
    from lit_llm.reporting.plots import _pyplot, _save

    plt = _pyplot()
    L, H, T, _ = maps.shape
    n = min(T, max_tokens)
    labels = [_short(t) for t in tokens[:n]]
    cell = max(2.2, min(6.0, 0.13 * n)) if H == 1 else max(2.0, min(3.5, 0.07 * n))
    cols = H if H > 1 else min(L, 2)
    rows = L if H > 1 else math.ceil(L / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols + 1.5, cell * rows + 1.0), squeeze=False)
    for idx, ax in enumerate(axes.flat):
        if idx >= L * H:
            ax.axis("off")
            continue
        layer, head = divmod(idx, H)
        ax.imshow(maps[layer, head, :n, :n].numpy(), cmap="viridis", vmin=0.0, vmax=1.0 if H > 1 else None,
                  interpolation="nearest")
        ax.set_title(f"layer {layer}" + (f" head {head}" if H > 1 else " (mean over heads)"), fontsize=8)
        show = H == 1 or head == 0
        ax.set_yticks(range(n) if show else [])
        ax.set_yticklabels(labels if show else [], fontsize=5 if H > 1 else 6)
        bottom = H == 1 or layer == L - 1
        ax.set_xticks(range(n) if bottom else [])
        ax.set_xticklabels(labels if bottom else [], fontsize=5 if H > 1 else 6, rotation=90)
    crop = f" (first {n} of {T} tokens)" if n < T else ""
    fig.suptitle(f"{title}: attention, queries (rows) x keys (columns){crop}", fontsize=10)
    fig.subplots_adjust(wspace=0.08 if H > 1 else 0.35, hspace=0.25 if H > 1 else 0.45, top=0.93 if H > 1 else 0.88)
    return _save(fig, path)


def attribution_strips(rows: list[dict], max_tokens: int, title: str, path: Path) -> Path:
    """One heat strip per example: its first `max_tokens` tokens coloured by attribution (red +, blue -),
    each strip scaled to its own largest |attribution|."""
    from lit_llm.reporting.plots import _pyplot, _save

    plt = _pyplot()
    n = max(min(len(r["tokens"]), max_tokens) for r in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(6.0, 0.28 * n + 1.5), 1.15 * len(rows) + 0.6), squeeze=False)
    for ax, r in zip(axes[:, 0], rows):
        a = torch.tensor(r["attributions"][:max_tokens])
        m = float(a.abs().max()) or 1.0
        ax.imshow(a[None].numpy(), cmap="RdBu_r", vmin=-m, vmax=m, aspect="auto")
        ax.set_xticks(range(len(a)))
        ax.set_xticklabels([_short(t) for t in r["tokens"][:max_tokens]], fontsize=7, rotation=90)
        ax.set_yticks([])
        ax.set_title(f"{r['which']} #{r['rank']} (score {r['score']:.3f}; max |attribution| {m:.3g})",
                     fontsize=8, loc="left")
        ax.set_xlim(-0.5, n - 0.5)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def scatter(z: torch.Tensor, groups: Sequence[str], group_name: str, title: str, path: Path) -> Path:
    """2-D points coloured by group, one legend entry per group (sorted)."""
    from lit_llm.reporting.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    cmap = plt.get_cmap("tab10")
    for i, g in enumerate(sorted(set(groups))):
        idx = [j for j, h in enumerate(groups) if h == g]
        ax.scatter(z[idx, 0].numpy(), z[idx, 1].numpy(), s=8, alpha=0.6, color=cmap(i % 10),
                   label=f"{g} ({len(idx)})")
    ax.legend(title=group_name, fontsize=8, markerscale=2)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    fig.tight_layout()
    return _save(fig, path)


__all__ = ["Probe", "DEFAULTS", "interpret_settings", "attention_probs", "attention_modules", "attention_maps",
           "token_attributions", "pca_2d", "write_interpretation", "attention_grid", "attribution_strips", "scatter"]


def test_data(task):
    """The data module the task was tested with (None when there is none, or no tokenizer)."""
    trainer = getattr(task, "_trainer", None)
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    return dm if dm is not None and getattr(dm, "tokenizer", None) is not None else None


def token_namer(tokenizer) -> Callable[[Sequence[int]], list[str]]:
    """ids -> each token's own text (decoded alone: byte-level "Ġbet" -> "bet"; "␣" for a bare space)."""
    def name(i: int) -> str:
        text = tokenizer.decode([i], skip_special_tokens=False).strip()
        return text or ("␣" if tokenizer.id_to_token(i) else f"[{i}]")

    return lambda ids: [name(int(i)) for i in ids]
