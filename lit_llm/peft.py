"""LoRA (Hu et al., 2021): train small low-rank adapters beside a frozen backbone (`task.peft`).

A targeted Linear W (out x in) becomes W x + (alpha / r) * B A x, with A (r x in) random and B (out x r) zero at
the start, so training begins from the pretrained model exactly. Our attention fuses q/k/v into one
`attn.c_attn` Linear (the gated MLP its gate and up into `mlp.c_fc`, cross-attention its k and v into
`cross.c_kv`), so `LoRALinear` puts one independent adapter on each chosen *output slice* of a Linear: an
adapter on `q` is the same as one on a separate q projection, and `k` alone leaves q and v untouched. Hugging
Face `peft` cannot do that on a fused Linear, and our checkpoints must load without it.

Target names (`task.peft.targets`), per backbone layer:

    q k v o                       attn.c_attn slices [q | k | v], attn.c_proj
    cross_q cross_k cross_v cross_o   cross.c_q, cross.c_kv slices [k | v], cross.c_proj (encoder-decoder)
    gate up down                  mlp.c_fc halves [gate | up] (gated MLP; not gated: up = all of c_fc), mlp.c_proj
    attention                     q k v o + the cross ones when present
    mlp                           gate up down (all of c_fc and c_proj)
    all_linear                    attention + mlp: every Linear in the blocks

State-dict names: a wrapped Linear keeps its weights under `.base` (`blocks.0.attn.c_attn.base.weight`) and adds
`.lora_A.<target>` / `.lora_B.<target>`. `plain_key` / `to_plain_state_dict` go back to the original names,
`to_lora_state_dict` / `load_base_state_dict` forward; `merged_state_dict` and `merge_lora` give a plain model's
weights with the adapters folded in, which loads and exports (`hf_io`) as any other checkpoint.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from lit_llm.errors import ConfigError, require_known_keys
from lit_llm.models.encoder_decoder import CrossAttention
from lit_llm.models.layers import MLP, SelfAttention

ATTENTION = ("q", "k", "v", "o")
CROSS = ("cross_q", "cross_k", "cross_v", "cross_o")
MLP_PARTS = ("gate", "up", "down")
SHORTHANDS = {"attention": ATTENTION + CROSS, "mlp": MLP_PARTS, "all_linear": ATTENTION + CROSS + MLP_PARTS}
TARGETS = ATTENTION + CROSS + MLP_PARTS + tuple(SHORTHANDS)
ADAPTERS = ("lora_A", "lora_B")  # the parameter dicts of a LoRALinear: only they are adapter tensors
BASE = "base"  # a LoRALinear's wrapped nn.Linear


@dataclass
class LoraConfig:
    """`task.peft`: LoRA adapters on `targets`, rank `r`, scaled by alpha / r, `dropout` on their input.
    Everything else in the backbone is frozen, except the embeddings / norms when asked. A task's own head
    (classifier, QA span head: outside the backbone) is new and always trains fully."""

    kind: str = "lora"
    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(ATTENTION))
    train_embeddings: bool = False
    train_norms: bool = False

    @classmethod
    def from_dict(cls, d: Mapping) -> LoraConfig:
        require_known_keys(d, [f.name for f in fields(cls)], "task.peft", "a LoRA")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        if self.kind != "lora":
            raise ConfigError(f"task.peft.kind={self.kind!r}: only 'lora' is supported")
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ConfigError(f"task.peft.r={self.r!r} must be a positive integer (the adapters' rank, e.g. 8)")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            raise ConfigError(f"task.peft.alpha={self.alpha!r} must be a positive number (adapters are scaled by "
                              "alpha / r; e.g. 2 * r)")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"task.peft.dropout={self.dropout!r} must be in [0, 1)")
        # a string from the command line ("q,v") or a list (OmegaConf's ListConfig too)
        targets = self.targets.split(",") if isinstance(self.targets, str) else list(self.targets or [])
        self.targets = [str(t).strip() for t in targets if str(t).strip()]
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ConfigError(f"task.peft.targets={self.targets!r}: "
                              + (f"unknown {unknown}; " if unknown else "none given; ")
                              + f"choose from {', '.join(TARGETS)}")
        for key in ("train_embeddings", "train_norms"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"task.peft.{key}={getattr(self, key)!r} must be true or false")


# ----------------------------------------------------------------------------------------------
# The adapted Linear.


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` (`.base`) plus one low-rank adapter per output slice in `slices`
    ({name: (start, end)}, non-overlapping): rows [start, end) of the output get (alpha / r) * B_s A_s x,
    the other rows none. A_s (r x in) starts Kaiming-uniform (as peft and Hu et al.), B_s ((end - start) x r)
    at zero, so the wrapped layer starts equal to the base. `dropout` applies to the adapters' input only."""

    def __init__(self, base: nn.Linear, slices: Mapping[str, tuple[int, int]], r: int = 8, alpha: float = 16,
                 dropout: float = 0.0):
        super().__init__()
        if isinstance(base, LoRALinear) or not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        self.slices = dict(sorted(((name, (int(s), int(e))) for name, (s, e) in slices.items()),
                                  key=lambda item: item[1]))
        end = 0
        for name, (s, e) in self.slices.items():
            if not end <= s < e <= base.out_features:
                raise ValueError(f"LoRA slice {name}=[{s}, {e}) overlaps another or is outside the "
                                 f"{base.out_features} outputs")
            end = e
        if not self.slices:
            raise ValueError("LoRALinear needs at least one output slice")
        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        like = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.ParameterDict({name: nn.Parameter(torch.empty(r, self.in_features, **like))
                                        for name in self.slices})
        self.lora_B = nn.ParameterDict({name: nn.Parameter(torch.zeros(e - s, r, **like))
                                        for name, (s, e) in self.slices.items()})
        for a in self.lora_A.values():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # nn.Linear's own init, as peft's lora_A

    def _stacked_a(self) -> torch.Tensor:
        """(n * r, in): every slice's A, one matmul for all of them."""
        return torch.cat(list(self.lora_A.values()))

    def _placed_b(self) -> torch.Tensor:
        """(out, n * r): slice i's B in its output rows and its own r columns (i * r ...), zero elsewhere, so
        that `_placed_b() @ _stacked_a()` is the whole delta W with each slice's in place."""
        n, r = len(self.lora_B), self.r
        rows, end = [], 0
        for i, (name, (s, e)) in enumerate(self.slices.items()):
            b = self.lora_B[name]
            if s > end:
                rows.append(b.new_zeros(s - end, n * r))
            rows.append(F.pad(b, (i * r, (n - 1 - i) * r)))
            end = e
        if end < self.out_features:
            rows.append(rows[-1].new_zeros(self.out_features - end, n * r))
        return torch.cat(rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # base(x) + scaling * B (A x): two thin matmuls over the tokens, never the (out x in) delta
        low_rank = F.linear(self.dropout(x), self._stacked_a())  # (..., n * r)
        return self.base(x) + F.linear(low_rank, self._placed_b()) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The adapters as one (out x in) matrix: scaling * B A with each slice in its rows."""
        return (self._placed_b() @ self._stacked_a()) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        """base.weight + delta W (added in float32, returned in the base's dtype); its forward equals this
        layer's in eval mode."""
        w = self.base.weight
        return (w.float() + self.delta_weight().float()).to(w.dtype)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain nn.Linear with the merged weight and the base's bias (same device, dtype, requires_grad)."""
        base = self.base
        merged = nn.Linear(self.in_features, self.out_features, bias=base.bias is not None,
                           device=base.weight.device, dtype=base.weight.dtype)
        merged.weight.copy_(self.merged_weight())
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        return merged.requires_grad_(base.weight.requires_grad)

    def extra_repr(self) -> str:
        parts = ", ".join(f"{name}=[{s}:{e}]" for name, (s, e) in self.slices.items())
        return f"r={self.r}, alpha={self.alpha}, slices: {parts}"


# ----------------------------------------------------------------------------------------------
# Where the targets are.


def _sites(module: nn.Module) -> dict[str, tuple[str, int, int]]:
    """The targets a layer offers: {target name: (its Linear's attribute, output start, end)}."""
    if isinstance(module, SelfAttention):
        q, k, v = module.qkv_sizes
        return {"q": ("c_attn", 0, q), "k": ("c_attn", q, q + k), "v": ("c_attn", q + k, q + k + v),
                "o": ("c_proj", 0, module.c_proj.out_features)}
    if isinstance(module, CrossAttention):
        inner = module.c_q.out_features
        return {"cross_q": ("c_q", 0, inner), "cross_k": ("c_kv", 0, inner), "cross_v": ("c_kv", inner, 2 * inner),
                "cross_o": ("c_proj", 0, module.c_proj.out_features)}
    if isinstance(module, MLP):
        hidden = module.c_fc.out_features
        fc = {"gate": ("c_fc", 0, hidden // 2), "up": ("c_fc", hidden // 2, hidden)} if module.gated \
            else {"up": ("c_fc", 0, hidden)}
        return {**fc, "down": ("c_proj", 0, module.c_proj.out_features)}
    return {}


def _plan(backbone: nn.Module, targets: Sequence[str]) -> dict[str, dict[str, tuple[int, int]]]:
    """{Linear's module name: {target: (start, end)}} for `targets`; a target that matches nothing in this
    backbone is a ConfigError naming what it has."""
    plan: dict[str, dict[str, tuple[int, int]]] = {}
    offered: set[str] = set()
    wanted = {name for t in targets for name in SHORTHANDS.get(t, (t,))}
    for prefix, module in backbone.named_modules():
        for name, (attr, start, end) in _sites(module).items():
            offered.add(name)
            if name in wanted:
                plan.setdefault(f"{prefix}.{attr}" if prefix else attr, {})[name] = (start, end)
    missing = [t for t in targets if not offered & set(SHORTHANDS.get(t, (t,)))]
    if missing:
        has = [t for t in TARGETS if t in offered]
        gated = " (its MLP is not gated: c_fc is all `up`)" if "gate" in missing and "up" in offered else ""
        raise ConfigError(f"task.peft.targets: {missing} match no layer of this {type(backbone).__name__}{gated}; "
                          f"it has {', '.join(has)} (and the shorthands {', '.join(SHORTHANDS)})")
    return plan


def apply_lora(backbone: nn.Module, config: LoraConfig | Mapping) -> dict:
    """Wrap the targeted Linears of `backbone` in place with `LoRALinear`s and freeze every other parameter,
    except the embeddings (every nn.Embedding: wte, wpe, tte, wte_src, T5's relative-bias tables...) with
    `train_embeddings` and the LayerNorms / RMSNorms with `train_norms`. Heads inside the backbone (GPT's untied
    lm_head, the Encoder's mlm head) stay frozen; a task's own head is outside the backbone and trains. Returns
    {"trainable": parameters that train, "total": all (adapters included), "targets": wrapped module names}."""
    if not isinstance(config, LoraConfig):
        config = LoraConfig.from_dict(config)
    if any(isinstance(m, LoRALinear) for m in backbone.modules()):
        raise ValueError("this backbone already has LoRA adapters: apply_lora once (merge_lora to start over)")
    plan = _plan(backbone, config.targets)  # before any change: a bad target leaves the backbone as it was
    backbone.requires_grad_(False)
    for name, slices in plan.items():
        parent_name, _, attr = name.rpartition(".")
        parent = backbone.get_submodule(parent_name)
        setattr(parent, attr, LoRALinear(getattr(parent, attr), slices, config.r, config.alpha, config.dropout))
    for module in backbone.modules():
        if (config.train_embeddings and isinstance(module, nn.Embedding)) or \
                (config.train_norms and isinstance(module, (nn.LayerNorm, nn.RMSNorm))):
            module.requires_grad_(True)
    params = list(backbone.parameters())  # tied weights once
    return {"trainable": sum(p.numel() for p in params if p.requires_grad),
            "total": sum(p.numel() for p in params), "targets": list(plan)}


# ----------------------------------------------------------------------------------------------
# Adapters, merging and names.


def lora_modules(module: nn.Module) -> dict[str, LoRALinear]:
    """{module name: LoRALinear} inside `module`."""
    return {name: m for name, m in module.named_modules() if isinstance(m, LoRALinear)}


def lora_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    """The adapter parameters (every LoRALinear's A and B), nothing else."""
    for m in lora_modules(module).values():
        yield from m.lora_A.values()
        yield from m.lora_B.values()


_ADAPTER_KEY = re.compile(rf"(^|\.)({'|'.join(ADAPTERS)})\.[^.]+$")


def is_adapter_key(name: str) -> bool:
    """Whether a state-dict name is an adapter tensor (`...c_attn.lora_A.q`)."""
    return _ADAPTER_KEY.search(name) is not None


def adapter_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors, under their state-dict names (a small file to save or share)."""
    return {name: t for name, t in module.state_dict().items() if is_adapter_key(name)}


def load_adapter_state_dict(module: nn.Module, adapters: Mapping[str, torch.Tensor]) -> None:
    """Load `adapter_state_dict`'s output into a model wrapped by the same `apply_lora` config."""
    expected = set(adapter_state_dict(module))
    if set(adapters) != expected:
        raise ValueError(f"adapter names differ: missing {sorted(expected - set(adapters))}, unexpected "
                         f"{sorted(set(adapters) - expected)} (were they made with the same task.peft.targets?)")
    module.load_state_dict(dict(adapters), strict=False)


_BASE_KEY = re.compile(rf"(^|\.){BASE}\.(weight|bias)$")


def plain_key(name: str) -> str:
    """The original name of a wrapped model's state-dict entry: `...c_attn.base.weight` -> `...c_attn.weight`;
    other names unchanged (any prefix, e.g. a task's `backbone.`, is kept)."""
    return _BASE_KEY.sub(r"\1\2", name)


def to_plain_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A wrapped model's state dict without the adapters, under the original names (unmerged base weights)."""
    return {plain_key(name): t for name, t in state.items() if not is_adapter_key(name)}


def to_lora_state_dict(plain: Mapping[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """A plain (pre-LoRA) state dict renamed for `module`'s wrapped layers: `X.weight` -> `X.base.weight` for
    every LoRALinear X."""
    wrapped = set(lora_modules(module))

    def key(name: str) -> str:
        owner, _, leaf = name.rpartition(".")
        return f"{owner}.{BASE}.{leaf}" if owner in wrapped and leaf in ("weight", "bias") else name

    return {key(name): t for name, t in plain.items()}


def load_base_state_dict(module: nn.Module, plain: Mapping[str, torch.Tensor]) -> None:
    """Load plain (pre-LoRA) weights into a LoRA-wrapped `module`; the adapters keep their values. Every
    non-adapter tensor must be there and nothing else (as `load_state_dict(strict=True)`)."""
    result = module.load_state_dict(to_lora_state_dict(plain, module), strict=False)
    missing = [plain_key(k) for k in result.missing_keys if not is_adapter_key(k)]
    if missing or result.unexpected_keys:
        raise ValueError(f"base weights do not fit this model: missing {missing}, unexpected "
                         f"{result.unexpected_keys}")


def base_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Every non-adapter tensor under its original name: the base weights, unmerged (embeddings and norms
    included, trained or not), e.g. to checksum the model the adapters belong to."""
    return to_plain_state_dict(backbone.state_dict())


@torch.no_grad()
def merged_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict `merge_lora(backbone)` would have (original names, adapters folded into the weights),
    without changing the backbone: for exporting while training goes on."""
    state = base_state_dict(backbone)
    for name, m in lora_modules(backbone).items():
        state[f"{name}.weight" if name else "weight"] = m.merged_weight()
    return state


def merge_lora(backbone: nn.Module) -> nn.Module:
    """In place: every LoRALinear becomes its merged nn.Linear, so `backbone` is a plain model again (original
    state-dict names, no adapters). Returns it."""
    for name, m in lora_modules(backbone).items():
        if not name:
            raise ValueError("merge_lora merges the LoRALinears inside a model; for one layer use LoRALinear.merge()")
        parent_name, _, attr = name.rpartition(".")
        setattr(backbone.get_submodule(parent_name), attr, m.merge())
    return backbone


__all__ = ["LoraConfig", "LoRALinear", "apply_lora", "lora_modules", "lora_parameters", "adapter_state_dict",
           "load_adapter_state_dict", "is_adapter_key", "plain_key", "to_plain_state_dict", "to_lora_state_dict",
           "load_base_state_dict", "base_state_dict", "merged_state_dict", "merge_lora", "TARGETS"]


# ----------------------------------------------------------------------------------------------
# `task.peft` in a run: what BackboneTask and the checkpoints use.

def peft_config(peft: Mapping | None) -> LoraConfig | None:
    """`task.peft` -> a LoraConfig, or None for full fine-tuning (`kind: none`, or no `task.peft`)."""
    peft = dict(peft or {})
    kind = peft.get("kind", "none")
    if kind == "none":
        if set(peft) - {"kind"}:
            raise ConfigError(f"task.peft.kind=none takes no other settings, got {sorted(set(peft) - {'kind'})}; "
                              "choose task.peft=lora to train adapters")
        return None
    return LoraConfig.from_dict(peft)


def tensor_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of tensors by name (sorted): names, dtypes, shapes and bytes; what a LoRA checkpoint records of the
    frozen base weights it leaves out, and checks again when it loads them."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def lora_names(module: nn.Module, plain_keys) -> list[str]:
    """The names plain (pre-LoRA) state-dict keys have in the LoRA-wrapped `module`, in the same order."""
    return list(to_lora_state_dict(dict.fromkeys(plain_keys), module))


def peft_base_reference(source: str, pretrained_state: Mapping[str, torch.Tensor], backbone: nn.Module) -> dict:
    """What a LoRA run's checkpoints record instead of the frozen base weights: `init_from` (where they come from),
    the plain names of the weights left out (frozen and loaded from `source`; trainable ones, e.g. embeddings with
    train_embeddings, and anything `source` lacks stay in the checkpoint) and their sha256 (`tensor_digest`)."""
    # every name of a tied weight (lm_head / mlm.decoder share wte's): the state dict holds each of them
    frozen = {plain_key(n) for n, p in backbone.named_parameters(remove_duplicate=False) if not p.requires_grad}
    frozen |= {plain_key(n) for n, _ in backbone.named_buffers()}
    keys = {k for k in pretrained_state if k in frozen}
    return {"init_from": source, "sha256": tensor_digest({k: pretrained_state[k] for k in keys}), "keys": keys}


def restore_peft_base(reference: Mapping) -> dict[str, torch.Tensor]:
    """The base weights a LoRA checkpoint left out, loaded again from `reference["init_from"]` and checked against
    its sha256; a ConfigError naming the source when they are gone or differ."""
    from lit_llm.checkpointing import load_pretrained

    source, keys = reference["init_from"], list(reference["keys"])
    try:
        state = load_pretrained(source).state_dict
    except ConfigError as e:
        raise ConfigError(f"this LoRA checkpoint's base weights (model.init_from={source}) cannot be loaded: {e}") \
            from None
    missing = [k for k in keys if k not in state]
    base = {k: state[k] for k in keys if k in state}
    if missing or tensor_digest(base) != reference["sha256"]:
        raise ConfigError(
            f"this LoRA checkpoint was trained on other base weights than model.init_from={source} holds now "
            f"(sha256 {reference['sha256'][:12]}..., now {tensor_digest(base)[:12]}...{'; missing ' if missing else ''}"
            f"{', '.join(missing[:3])}); its adapters only fit the weights they were trained on: restore that "
            "checkpoint at the same path")
    return base
