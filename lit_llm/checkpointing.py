"""Checkpoint files: atomic writes, self-contained loading, compatibility checks."""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lit_llm.errors import ConfigError
from lit_llm.tokenization import tokenizer_from_file, tokenizer_from_str


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `<name>.tmp-*` in the target directory, fsyncs, then renames over the target.

    A run killed mid-save leaves only a temp file that nothing loads; the previous checkpoint
    under the final name stays intact. Loading (resume, test of the best checkpoint) goes through
    `read_checkpoint`: weights only, never code from the file.
    """

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path, map_location)  # None: tensors where they were saved (Lightning's default)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def resolve_ckpt_path(ckpt_path: str | None, key: str = "ckpt_path") -> str | None:
    """`ckpt_path` may name a checkpoint file or a run directory (then its checkpoints/last.ckpt); `key` is the
    setting that named it (ckpt_path, model.init_from), for the messages."""
    if not ckpt_path:
        return None
    p = Path(ckpt_path)
    if p.is_dir():
        for candidate in (p / "checkpoints" / "last.ckpt", p / "last.ckpt"):
            if candidate.is_file():
                return str(candidate)
        raise ConfigError(f"{key}={ckpt_path} is a directory without checkpoints/last.ckpt; "
                          f"point {key} at a .ckpt file")
    if not p.is_file():
        raise ConfigError(f"{key}={ckpt_path}: no such checkpoint file; "
                          "give the path of a .ckpt (e.g. <run dir>/checkpoints/last.ckpt)")
    return str(p)


def read_checkpoint(path: str | Path, map_location: Any = "cpu", key: str = "ckpt_path") -> dict:
    """A checkpoint's content, loaded without running code: `torch.load(weights_only=True)` unpickles only
    tensors and plain types (ours hold nothing else). A file that needs more, e.g. one crafted to run a command
    when unpickled, is refused with a ConfigError before any of it runs; so is a truncated or foreign file, and
    one that holds no dict (a tensor or a list saved with torch.save). `key` names the setting in messages."""
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((line for line in str(e).splitlines() if "GLOBAL" in line), "")
        if not detail:  # not a pickle of ours at all (junk, a truncated file): the generic message
            raise ConfigError(_unreadable(path, key, e)) from None
        raise ConfigError(f"{key}={path} is refused: it holds Python objects other than tensors and plain types, "
                          f"and loading them could run code from the file ({detail.strip()}); "
                          "lit-llm loads only checkpoints that need no code (those pipelines/train.py writes)") from None
    except Exception as e:  # truncated/foreign file: say which file and what to do
        raise ConfigError(_unreadable(path, key, e)) from e
    if not isinstance(content, dict):
        raise ConfigError(f"{key}={path} holds a {type(content).__name__}, not a checkpoint (a dict with the weights "
                          "and lit-llm's metadata); give a .ckpt written by pipelines/train.py")
    return content


def _unreadable(path: str | Path, key: str, e: BaseException) -> str:
    """Why `torch.load` could not read `path`, in words: empty, a damaged or truncated checkpoint, or another kind
    of file (what its first bytes say it is)."""
    from lit_llm.data.sources import binary_kind

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        size, head = -1, b""
    if size == 0:
        why = "it is empty (0 bytes: a copy or a save that did not finish?)"
    elif head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):  # torch's zip format, or its legacy pickle
        why = f"a truncated or damaged PyTorch file ({size:,} bytes; {type(e).__name__}: {str(e)[:120]})"
    else:
        kind = binary_kind(head) or ("a text file" if _is_text(head) else None)
        why = f"not a PyTorch checkpoint ({f'it is {kind}' if kind else f'it starts with {head[:8]!r}'})"
    return (f"{key}={path} is not a readable checkpoint: {why}; use another checkpoint "
            "(e.g. <run dir>/checkpoints/last.ckpt)")


def _is_text(head: bytes) -> bool:
    try:
        return b"\x00" not in head and bool(head.decode("utf-8").strip())
    except UnicodeDecodeError:
        return False


def lit_llm_meta(ckpt: dict, path: str, key: str = "ckpt_path") -> dict:
    """The lit-llm metadata of a checkpoint (`ckpt["lit_llm"]`); a ConfigError for a file another program wrote
    (a Hugging Face or plain PyTorch state dict, a Lightning checkpoint of another project)."""
    meta = ckpt.get("lit_llm")
    if not isinstance(meta, dict) or not isinstance(meta.get("backbone_config"), dict):
        hint = (" (a Hugging Face model: model.init_from=hf:<its directory>)" if key == "model.init_from" else
                "; to start from a pretrained model's weights use model.init_from=<run dir | .ckpt | hf:...>")
        raise ConfigError(f"{key}={path} was not written by lit-llm (no 'lit_llm' metadata with a backbone config): "
                          f"give a checkpoint pipelines/train.py wrote, e.g. <run dir>/checkpoints/last.ckpt{hint}")
    return meta


def check_compatible(path: str, backbone_config: dict, tokenizer_fingerprint: str | None = None) -> dict:
    """Stops with a clear message when a checkpoint was trained with another model or tokenizer."""
    ckpt = read_checkpoint(path)
    meta = lit_llm_meta(ckpt, path)
    from lit_llm.models import canonical_backbone_config

    saved = canonical_backbone_config(meta["backbone_config"])
    diffs = [f"model.{k}={saved.get(k)!r} in the checkpoint but {v!r} in the config"
             for k, v in backbone_config.items() if saved.get(k) != v]
    if diffs:
        fixes = " ".join(f"model.{k}={saved.get(k)}" for k, v in backbone_config.items() if saved.get(k) != v)
        raise ConfigError(f"ckpt_path={path} comes from another model config: " + "; ".join(diffs)
                          + f". Resume with the same settings (e.g. {fixes}) or drop ckpt_path to start anew.")
    if tokenizer_fingerprint and meta.get("tokenizer_fingerprint") not in (None, tokenizer_fingerprint):
        raise ConfigError(f"ckpt_path={path} was trained with another tokenizer than this config builds; "
                          "use the same tokenizer/data settings as that run")
    return ckpt


def export_safetensors(backbone, path: Path) -> None:
    """Backbone weights alone (no optimizer state) as safetensors, its config in the metadata."""
    import json

    from safetensors.torch import save_model

    from lit_llm.peft import lora_modules, merge_lora

    if lora_modules(backbone):  # LoRA: the merged weights (base + adapters), a plain backbone's file
        import copy

        backbone = merge_lora(copy.deepcopy(backbone))
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    save_model(backbone, str(tmp), metadata={"lit_llm_backbone_config": json.dumps(backbone.config.to_dict())})
    os.replace(tmp, path)


def load_backbone(path: str, device: str | torch.device = "cpu"):
    """(backbone in eval mode, tokenizer) from a lit-llm checkpoint alone: no config needed.

    `path`: a .ckpt, a run directory (its checkpoints/last.ckpt), a model.safetensors, or an int8 export
    (`pipelines/export.py --quantize int8`: its directory or model-int8.safetensors; CPU only); the tokenizer of
    a .safetensors comes from the tokenizer.json beside it.
    """
    from lit_llm.compression import int8_metadata, load_int8
    from lit_llm.models import build_backbone

    int8 = int8_metadata(path)
    if int8 is not None:
        if torch.device(device).type != "cpu":
            raise ConfigError(f"ckpt_path={path} is an int8 export, which runs on the CPU only (device={device}); "
                              "use device=cpu, or the float32 checkpoint it was exported from "
                              f"({int8.get('lit_llm_source', '<run dir>')}) on {device}")
        return load_int8(int8["file"]), _tokenizer_beside(int8["file"])
    if str(path).endswith(".safetensors"):
        import json

        from safetensors import safe_open
        from safetensors.torch import load_model

        with safe_open(str(path), framework="pt") as f:
            config = json.loads(f.metadata()["lit_llm_backbone_config"])
        model = build_backbone(config)
        load_model(model, str(path))
        return model.to(device).eval(), _tokenizer_beside(path)

    ckpt = read_checkpoint(resolve_ckpt_path(path))
    meta = lit_llm_meta(ckpt, path)
    model = backbone_from_checkpoint(ckpt)
    tokenizer = tokenizer_from_str(meta["tokenizer_json"]) if meta.get("tokenizer_json") else None
    return model.to(device).eval(), tokenizer


def _tokenizer_beside(weights: str | Path):
    tok_file = Path(weights).with_name("tokenizer.json")
    return tokenizer_from_file(tok_file) if tok_file.is_file() else None


def backbone_from_checkpoint(ckpt: dict):
    """The backbone of a lit-llm checkpoint (read with `read_checkpoint`), as a plain model. A LoRA run's
    (`task.peft=lora`) comes back merged: its frozen base is loaded from where it came from (checked against its
    sha256), its adapters are folded into the weights; the logits equal the adapter model's."""
    from lit_llm.models import build_backbone
    from lit_llm.peft import apply_lora, merge_lora, peft_config, restore_peft_base, to_lora_state_dict

    meta = ckpt["lit_llm"]
    model = build_backbone(meta["backbone_config"])
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    if not meta.get("peft_base"):
        model.load_state_dict(state)
        return model
    apply_lora(model, peft_config(ckpt["hyper_parameters"]["peft"]))
    model.load_state_dict({**to_lora_state_dict(restore_peft_base(meta["peft_base"]), model), **state})
    return merge_lora(model)


def is_lora_checkpoint(path: str) -> bool:
    """Whether a lit-llm checkpoint (a .ckpt or a run directory) holds LoRA adapters on a base it refers to."""
    return bool((read_checkpoint(resolve_ckpt_path(path)).get("lit_llm") or {}).get("peft_base"))


class Pretrained:
    """What `model.init_from` brings: backbone config and weights, and the tokenizer they need."""

    def __init__(self, source: str, backbone_config: dict, state_dict: dict, tokenizer, special_ids=None,
                 chat_template: str | None = None):
        self.source = source
        self.chat_template = chat_template  # the tokenizer's Jinja chat template, kept in the run's checkpoints
        self.backbone_config = backbone_config
        self.state_dict = state_dict
        self.tokenizer = tokenizer
        self.special_ids = special_ids  # None: our <pad> <unk> <bos> <eos> <mask> <cls> <sep> ids 0..6


def load_pretrained(spec: str) -> Pretrained:
    """`model.init_from`: a lit-llm checkpoint (.ckpt or run directory, CLM or MLM), `hf:<dir>`, a Hugging Face
    checkpoint on disk (config.json + weights), or `hf:<org>/<name>[@revision]` (the local Hugging Face cache,
    or the hub when it is reachable: `hf_io.resolve_hf`)."""
    if spec.startswith("hf:"):
        import json

        from lit_llm.models import hf_io

        directory = hf_io.resolve_hf(spec[3:])
        config_file = directory / "config.json"
        if not config_file.is_file():
            raise ConfigError(f"model.init_from={spec}: no config.json in {directory}; "
                              "point it at a Hugging Face model directory (config.json + model.safetensors)")
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type not in hf_io.HF_LOADERS:
            raise ConfigError(f"model.init_from={spec}: model_type={model_type!r} is not supported "
                              f"(supported: {sorted(hf_io.HF_LOADERS)})")
        model, tokenizer = hf_io.HF_LOADERS[model_type](directory)
        if tokenizer is None:
            raise ConfigError(f"model.init_from={spec}: no tokenizer.json or vocab.txt in {directory}")
        # the special tokens named in tokenizer_config.json / special_tokens_map.json, else the usual strings
        special = hf_io.hf_special_ids(directory)
        return Pretrained(spec, model.config.to_dict(), model.state_dict(), tokenizer, special,
                          hf_io.hf_chat_template(directory))


    from lit_llm.compression import int8_metadata

    int8 = int8_metadata(spec)
    if int8 is not None:
        raise ConfigError(f"model.init_from={spec} is an int8 export (pipelines/export.py --quantize int8): training "
                          "from int8 weights is not supported (they are rounded, inference-only buffers); point "
                          "model.init_from at the float32 checkpoint it was exported from "
                          f"({int8.get('lit_llm_source', '<run dir> or its checkpoints/last.ckpt')})")
    path = resolve_ckpt_path(spec, "model.init_from")
    ckpt = read_checkpoint(path, key="model.init_from")
    meta = lit_llm_meta(ckpt, spec, "model.init_from")
    if not meta.get("tokenizer_json"):
        raise ConfigError(f"model.init_from={spec} is not a lit-llm checkpoint with a tokenizer inside; give a "
                          "checkpoint pipelines/train.py wrote (e.g. <run dir>/checkpoints/last.ckpt)")
    state = backbone_from_checkpoint(ckpt).state_dict()  # a LoRA run's: merged
    from lit_llm.models import canonical_backbone_config

    run_config = meta.get("run_config") or {}
    # a run that started from a Hugging Face model keeps its special ids (T5's <pad> decoder start, BERT's [CLS])
    return Pretrained(path, canonical_backbone_config(meta["backbone_config"]), state,
                      tokenizer_from_str(meta["tokenizer_json"]), run_config.get("special_ids"),
                      chat_template=run_config.get("chat_template"))


def load_pretrained_encoder(spec: str, model_cfg: dict) -> Pretrained:
    """`model.init_encoder_from`: a pretrained encoder (hf:<BERT / RoBERTa / DistilBERT dir or id>, or a lit-llm MLM
    run) as the encoder of the encoder-decoder `model_cfg` describes (`encoder_decoder.from_encoder`): its
    architecture and weights for the encoder side, the decoder and cross-attention fresh. The decoder starts from
    the tokenizer's [CLS] and ends with its [SEP] when it has no <bos>/<eos>, as transformers' BERT2BERT does."""
    from lit_llm.models.encoder_decoder import from_encoder

    if model_cfg.get("arch") != "encoder_decoder":
        raise ConfigError(f"model.init_encoder_from={spec} builds an encoder-decoder around a pretrained encoder; "
                          f"it needs model.arch=encoder_decoder (e.g. model=transformer_small), got "
                          f"model.arch={model_cfg.get('arch')}")
    encoder = load_pretrained(spec)
    config, state = from_encoder(encoder.backbone_config, encoder.state_dict, model_cfg,
                                 source=f"model.init_encoder_from={spec}")
    special = dict(encoder.special_ids or {})
    for role, fallback in (("<bos>", "<cls>"), ("<eos>", "<sep>")):
        if role not in special and fallback in special:
            special[role] = special[fallback]
    return Pretrained(encoder.source, config, state, encoder.tokenizer, special or None, encoder.chat_template)


# settings a fine-tuning config may change on a pretrained backbone; the rest are its architecture
TUNABLE = ("dropout", "activation_checkpointing")  # settings a fine-tuning run may change


def merge_backbone_config(config: dict, pretrained: Pretrained) -> tuple[dict, list[str]]:
    """The pretrained architecture with the config's tunable settings; returns the keys that differed."""
    merged = dict(pretrained.backbone_config)
    changed = []
    for key, value in config.items():
        if key in TUNABLE and key in merged:
            merged[key] = value
        elif key in merged and value is not None and value != merged[key]:
            changed.append(f"model.{key}={value} -> {merged[key]}")
    return merged, changed


def grow_vocabulary(pretrained: Pretrained, backbone) -> dict:
    """The pretrained weights with their vocabulary-sized tensors (embeddings, output layer, its bias) grown to the
    backbone's vocabulary (tokens added to the tokenizer, e.g. chat markers): the new rows start at the mean of the
    pretrained rows (Hewitt, 2021: new tokens then barely move the model's predictions); nothing else changes."""
    old = pretrained.backbone_config.get("vocab_size")
    new = getattr(getattr(backbone, "config", None), "vocab_size", None)
    if not old or not new or new <= old:
        return pretrained.state_dict
    target = backbone.state_dict()
    state = dict(pretrained.state_dict)
    for key, value in pretrained.state_dict.items():
        have = target.get(key)
        if have is not None and value.dim() >= 1 and value.shape[0] == old and have.shape[0] == new \
                and value.shape[1:] == have.shape[1:]:
            extra = value.float().mean(dim=0, keepdim=True).to(value.dtype).expand(new - old, *value.shape[1:])
            state[key] = torch.cat([value, extra], dim=0)
    return state


def load_backbone_weights(backbone, pretrained: Pretrained) -> str:
    """Loads the weights (into the base of LoRA-wrapped layers too); returns one line naming what was missing
    (besides LoRA adapters) or unexpected."""
    from lit_llm.peft import is_adapter_key, to_lora_state_dict

    state = grow_vocabulary(pretrained, backbone)
    result = backbone.load_state_dict(to_lora_state_dict(state, backbone), strict=False)
    result.missing_keys[:] = [k for k in result.missing_keys if not is_adapter_key(k)]
    line = f"init_from {pretrained.source}: loaded {len(pretrained.state_dict) - len(result.unexpected_keys)} tensors"
    if result.missing_keys:
        line += f"; missing (freshly initialised): {sorted(result.missing_keys)}"
    if result.unexpected_keys:
        line += f"; unexpected (ignored): {sorted(result.unexpected_keys)}"
    return line
