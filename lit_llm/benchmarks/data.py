"""Data pipeline speed: what a first run and a rerun of `lit_llm.run.train` pay before training.

For each corpus, in a fresh temporary cache directory, with our `CorpusDataModule` and tokenizer cache
(the calls `lit_llm.run.train` makes, in its order):
  load_s             load_raw(): read the files into Arrow, hold out validation;
  tokenizer_train_s  get_tokenizer(): train the BPE tokenizer on the train split;
  tokenize_pack_s    prepare_data() + setup(): tokenize every split, pack blocks, save them;
                     tokens_per_s = tokens of all splits / tokenize_pack_s;
  cached_reload_s    a new data module on the same cache: load_raw + the cached tokenizer +
                     set_tokenizer + prepare_data + setup (what every later run pays).
A corpus whose files are missing (no LIT_LLM_DATA_DIR) gives a note row, not an error.
"""
from __future__ import annotations

import tempfile
import time

import datasets

from lit_llm.data.corpus import CorpusDataModule
from lit_llm.data.sources import resolve_files
from lit_llm.errors import ConfigError
from lit_llm.tokenization import get_tokenizer


def _missing(files) -> str | None:
    """The first file spec that matches nothing, or None."""
    for spec in files.values() if isinstance(files, dict) else [files]:
        try:
            resolve_files(spec)
        except ConfigError:
            return str(spec)
    return None


def _clock(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _load(spec: dict, cfg: dict, cache: str) -> tuple[CorpusDataModule, float, float]:
    """A data module with its tokenizer set (trained, or from the cache); (it, load_raw's seconds,
    the tokenizer's seconds)."""
    dm = CorpusDataModule(**spec, block_size=int(cfg["block_size"]), num_proc=int(cfg.get("num_proc", 1)),
                          cache_dir=cache)
    _, load_s = _clock(dm.load_raw)
    (tok, fp), tokenizer_s = _clock(lambda: get_tokenizer(texts=dm.train_texts, fingerprint=dm.data_fingerprint,
                                                          cache_dir=cache, **dict(cfg["tokenizer"])))
    dm.set_tokenizer(tok, fp)
    return dm, load_s, tokenizer_s


def _reload(spec: dict, cfg: dict, cache: str) -> CorpusDataModule:
    dm, _, _ = _load(spec, cfg, cache)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _one(name: str, spec: dict, cfg: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="lit_llm_bench_data_") as cache:
        dm, load_s, tokenizer_s = _load(spec, cfg, cache)
        _, pack_s = _clock(lambda: (dm.prepare_data(), dm.setup("fit")))
        tokens = sum(s["tokens"] for s in dm.stats.values())
        characters = sum(len(t) for split in dm.raw.values() for t in split["text"])

        again, reload_s = _clock(lambda: _reload(spec, cfg, cache))
        if again.blocks["train"].shape != dm.blocks["train"].shape:  # the reload must be the same data
            raise RuntimeError(f"{name}: the cached reload differs from the first build")
        return {"dataset": name, "megachars": round(characters / 1e6, 2), "splits": len(dm.stats),
                "tokens": tokens, "vocab": dm.tokenizer.get_vocab_size(), "load_s": round(load_s, 2),
                "tokenizer_train_s": round(tokenizer_s, 2), "tokenize_pack_s": round(pack_s, 2),
                "tokens_per_s": round(tokens / pack_s), "cached_reload_s": round(reload_s, 2)}


def run(cfg: dict) -> list[dict]:
    datasets.disable_progress_bars()  # the tables are the output
    rows = []
    for name, spec in (cfg.get("datasets") or {}).items():
        spec = dict(spec)
        missing = _missing(spec["files"])
        if missing:
            rows.append({"dataset": name, "note": f"skipped: no data at {missing} (LIT_LLM_DATA_DIR / paths.data_dir)"})
            continue
        rows.append(_one(name, spec, cfg))
    return rows
