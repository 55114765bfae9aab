"""Text from trained models: `Generator` for any GPT or encoder-decoder checkpoint (`pipelines/generate.py`)
and `sample_text`, the continuations a causal LM writes during training (`GenerateSamples` callback)."""
from __future__ import annotations

import torch

from lit_llm.errors import ConfigError
from lit_llm.models.decoding import GENERATION_OPTIONS, beam_search_gpt, generate, generate_seq2seq
from lit_llm.tokenization import BOS, EOS, PAD, token_id


class Generator:
    """Holds a loaded backbone and its tokenizer; `__call__(prompts) -> texts`."""

    def __init__(self, ckpt_path: str, generation: dict, device: str = "cpu", source_prefix: str = "",
                 seed: int = 1234):
        from lit_llm.checkpointing import load_backbone

        unknown = sorted(set(generation) - set(GENERATION_OPTIONS))
        if unknown:
            raise ConfigError(f"generation.{unknown[0]} is not a generation option; known: {', '.join(GENERATION_OPTIONS)}")
        self.model, self.tokenizer = load_backbone(ckpt_path, device=device)
        if self.tokenizer is None:
            raise ConfigError(f"ckpt_path={ckpt_path}: no tokenizer found with the weights (tokenizer.json beside them)")
        self.arch = self.model.config.arch
        if self.arch not in ("gpt", "encoder_decoder"):
            raise ConfigError(f"ckpt_path={ckpt_path} holds a {self.arch!r} backbone, which does not generate text; "
                              "use a GPT (clm) or encoder-decoder (seq2seq) checkpoint")
        self.options = {k: v for k, v in generation.items() if v is not None}
        self.device, self.prefix = device, source_prefix
        self.generator = torch.Generator(device=device).manual_seed(seed)
        # ours: <bos>/<eos>/<pad>; an imported tokenizer's own (</s>, <|endoftext|>, ...); no pad: the end token
        from lit_llm.models.hf_io import hf_special_ids

        special = hf_special_ids(self.tokenizer)
        self.ids = {"bos": special.get(BOS), "eos": special.get(EOS), "pad": special.get(PAD, special.get(EOS))}

    def __call__(self, prompts: list[str]) -> list[str]:
        if self.arch == "gpt":
            return [self._gpt(p) for p in prompts]  # prompts differ in length: one row each
        enc = self.tokenizer.encode_batch([self.prefix + p for p in prompts], add_special_tokens=False)
        limit = self.model.config.block_size - 1
        rows = [e.ids[:limit] + [self.ids["eos"]] for e in enc]
        width = max(map(len, rows))
        src = torch.full((len(rows), width), self.ids["pad"], dtype=torch.long)
        mask = torch.zeros_like(src)
        for i, r in enumerate(rows):
            src[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        opts = dict(self.options)
        out = generate_seq2seq(self.model, src.to(self.device), mask.to(self.device), start_id=self.ids["bos"],
                               eos_id=self.ids["eos"], pad_id=self.ids["pad"], generator=self.generator, **opts)
        texts = []
        for row in out.tolist():
            row = row[: row.index(self.ids["eos"])] if self.ids["eos"] in row else row
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True))
        return texts

    def _gpt(self, prompt: str) -> str:
        ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids or [self.ids["eos"]]
        ids = ids[-(self.model.config.block_size - 1):]
        prompt = torch.tensor([ids], device=self.device)
        if self.options.get("num_beams", 1) > 1:
            opts = {k: v for k, v in self.options.items() if k not in ("temperature", "top_k", "top_p")}
            new = beam_search_gpt(self.model, prompt, eos_id=self.ids["eos"], pad_id=self.ids["pad"], **opts)[0].tolist()
        else:
            opts = {k: v for k, v in self.options.items() if k in ("max_new_tokens", "temperature", "top_k", "top_p",
                                                                     "use_cache")}
            out = generate(self.model, prompt, eos_id=self.ids["eos"], generator=self.generator, **opts)
            new = out[0, len(ids):].tolist()
        new = new[: new.index(self.ids["eos"])] if self.ids["eos"] in new else new
        return self.tokenizer.decode(new, skip_special_tokens=True)


def sample_text(backbone, tokenizer, prompt: str, max_new_tokens: int, temperature: float,
                top_k: int | None, seed: int, num_samples: int = 1, eos_id: int | None = None) -> str:
    """Decode `num_samples` continuations of `prompt`; documents start after an end-of-document token
    (`eos_id`, default the tokenizer's <eos>)."""
    eos = token_id(tokenizer, "<eos>") if eos_id is None else eos_id
    ids = [eos] + tokenizer.encode(prompt, add_special_tokens=False).ids
    device = next(backbone.parameters()).device
    x = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    # past block_size, generate() slides its window (recomputing the last block_size tokens)
    out = generate(backbone, x, max_new_tokens, temperature=temperature, top_k=top_k, generator=gen)
    texts = []
    for row in out.tolist():
        docs, cur = [], []
        for t in row[1:]:  # drop the leading <eos>
            if t == eos:
                docs.append(cur)
                cur = []
            else:
                cur.append(t)
        docs.append(cur)
        texts.append("\n".join(tokenizer.decode(d, skip_special_tokens=True) for d in docs))
    return "\n---\n".join(texts)
