"""Tokenize + pack vs corpus size: peak resident memory, tokens/s, and the time to reload the cached splits.

For each corpus (a text file, one document per line) and each implementation of `CorpusDataModule`
("new": this checkout's; or a file of an older `lit_llm/data/corpus.py`, e.g. `git show HEAD~1:...`),
with a fixed tokenizer (a tokenizer.json: only tokenizing and packing are measured), three FRESH processes:
  load     `load_raw()` once, so that datasets' Arrow copy of the text is in the cache (its time and peak are
           reported as `load_s` / `load_peak_mb`: the same for every implementation);
  build    `load_raw()` (from that cache) and `set_tokenizer`, then, with the peak restarted, `prepare_data()` +
           `setup()` (tokenize, pack, save, open): `build_s`, `tokens_per_s` (tokens of every split / build_s),
           `rss_before_mb` (the resident set before the build), `build_added_mb` (the process's peak resident set
           during the build, VmHWM restarted through /proc/self/clear_refs as in `benchmarks/memory.py`, minus
           `rss_before_mb`) and `anon_added_mb` (the same for anonymous memory, RssAnon sampled every 5 ms: the
           heap, without the pages of memory-mapped files, which the kernel can drop; datasets' Arrow copy of the
           text is such a file, and `load_raw` touches all of it, which is most of `rss_before_mb` at 1 GB);
  reload   a new data module on the same cache: `setup()` + the first training batch: `reload_s`, and what they
           add to the resident set (`reload_added_mb`) and to anonymous memory (`reload_anon_added_mb`).
Validation is held out as `data.holdout=rows` with `val_fraction` (default 0.01); every split counts.

  python -m lit_llm.benchmarks.packing --tokenizer tok.json --corpus 10MB=/tmp/c10.txt --corpus 100MB=/tmp/c100.txt \\
      [--old old_corpus.py] [--work-dir DIR] [--out table.md]

or as the `packing` section of pipelines/benchmark.py (`packing.enabled=true`: synthetic corpora of
`packing.generate_mb` megabytes from `lit_llm.corpora.make_quickstart`, a BPE tokenizer trained on the first).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from lit_llm.benchmarks import run_fresh

MB = 2**20


def _module(implementation: str):
    """The CorpusDataModule class of "new" (this checkout) or of an older corpus.py file."""
    if implementation == "new":
        from lit_llm.data.corpus import CorpusDataModule

        return CorpusDataModule
    spec = importlib.util.spec_from_file_location("lit_llm_corpus_under_test", implementation)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.CorpusDataModule


def _data_module(spec: dict):
    import datasets

    from lit_llm.tokenization import load_tokenizer

    datasets.disable_progress_bars()
    dm = _module(spec["implementation"])(files=spec["corpus"], block_size=spec["block_size"], batch_size=8,
                                         val_fraction=spec["val_fraction"], num_proc=spec["num_proc"],
                                         cache_dir=spec["cache_dir"])
    t0 = time.perf_counter()
    dm.load_raw()
    load_s = time.perf_counter() - t0
    dm.set_tokenizer(load_tokenizer(spec["tokenizer"]))
    return dm, load_s


def measure(spec: dict) -> dict:
    """One step ("load", "build" or "reload") of one corpus and implementation; run it in a fresh process."""
    from lit_llm.benchmarks.memory import _reset_peak_rss, _rss_bytes

    if spec["step"] == "load":
        _, load_s = _data_module(spec)
        return {"load_s": round(load_s, 2), "load_peak_mb": round(_rss_bytes(peak=True) / MB)}
    dm, _ = _data_module(spec)
    _reset_peak_rss()
    before = _rss_bytes(peak=False)
    with _AnonPeak() as anon:
        t0 = time.perf_counter()
        if spec["step"] == "build":
            dm.prepare_data()
            dm.setup("fit")
        else:
            dm.setup("fit")
            next(iter(dm.train_dataloader()))
        seconds = time.perf_counter() - t0
    added, anon_added = round((_rss_bytes(peak=True) - before) / MB), round((anon.peak - anon.before) / MB)
    if spec["step"] == "reload":
        return {"reload_s": round(seconds, 3), "reload_added_mb": added, "reload_anon_added_mb": anon_added}
    tokens = sum(s["tokens"] for s in dm.stats.values())
    return {"tokens": tokens, "build_s": round(seconds, 2), "tokens_per_s": round(tokens / seconds),
            "rss_before_mb": round(before / MB), "build_added_mb": added, "anon_added_mb": anon_added,
            "cache_mb": round(sum(f.stat().st_size for f in Path(dm.tokenized_dir).rglob("*") if f.is_file()) / MB),
            "dtype": str(dm.blocks["train"].dtype)}


class _AnonPeak:
    """The peak of this process's anonymous resident memory (RssAnon of /proc/self/status: heap and the like, not
    mapped files) inside a `with` block, sampled every 5 ms by a thread; `before`: at the start."""

    def __enter__(self) -> "_AnonPeak":
        from lit_llm.benchmarks.memory import _status_kb

        self._read = lambda: (_status_kb("RssAnon") or 0) * 1024
        self.before = self.peak = self._read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._read())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())


def _fresh(spec: dict) -> dict:
    return run_fresh(measure, spec)


def _forget_datasets_caches(cache_dir: Path) -> None:
    """Drop datasets' map/filter caches (an old implementation tokenizes through `Dataset.map`, whose
    cached result would make a second build free) and our tokenized splits; keep the Arrow copy of the text."""
    shutil.rmtree(cache_dir / "tokenized", ignore_errors=True)
    for f in (cache_dir / "hf_datasets").rglob("cache-*.arrow"):
        f.unlink()


def measure_corpus(name: str, corpus: str, tokenizer: str, implementations: list[str], work_dir: Path,
                   block_size: int = 256, num_proc: int = 1, val_fraction: float = 0.01) -> list[dict]:
    """The rows of one corpus: one per implementation, each from its own fresh processes."""
    cache = work_dir / f"cache_{name}"
    spec = {"corpus": corpus, "tokenizer": tokenizer, "cache_dir": str(cache), "block_size": block_size,
            "num_proc": num_proc, "val_fraction": val_fraction, "implementation": "new"}
    loaded = _fresh({**spec, "step": "load"})
    rows = []
    for implementation in implementations:
        _forget_datasets_caches(cache)
        label = "new" if implementation == "new" else f"old ({Path(implementation).name})"
        one = {**spec, "implementation": implementation}
        row = {"corpus": name, "megabytes": round(os.path.getsize(corpus) / 1e6, 1), "implementation": label, **loaded,
               **_fresh({**one, "step": "build"}), **_fresh({**one, "step": "reload"})}
        rows.append(row)
        print(json.dumps(row), flush=True)
    _forget_datasets_caches(cache)
    return rows


def run(cfg: dict) -> list[dict]:
    """The `packing` section of pipelines/benchmark.py: synthetic corpora of `generate_mb` megabytes."""
    from lit_llm.corpora.make_quickstart import generate_corpus
    from lit_llm.tokenization import train_bpe

    with tempfile.TemporaryDirectory(prefix="lit_llm_bench_packing_") as tmp:
        work = Path(tmp)
        corpora = {}
        for mb in cfg.get("generate_mb") or [10]:
            path = work / f"corpus_{mb}mb.txt"
            path.write_text(generate_corpus(int(cfg.get("seed", 0)), int(float(mb) * 1e6)))
            corpora[f"{mb}MB"] = str(path)
        first = next(iter(corpora.values()))
        tok = train_bpe(Path(first).read_text().splitlines(), int(cfg.get("vocab_size", 8192)))
        tok.save(str(work / "tokenizer.json"))
        implementations = ["new", *([cfg["old"]] if cfg.get("old") else [])]
        return [row for name, path in corpora.items()
                for row in measure_corpus(name, path, str(work / "tokenizer.json"), implementations, work,
                                          int(cfg.get("block_size", 256)), int(cfg.get("num_proc", 1)),
                                          float(cfg.get("val_fraction", 0.01)))]


def markdown(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return "\n".join(lines + ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", action="append", required=True, help="NAME=PATH (repeat)")
    ap.add_argument("--tokenizer", required=True, help="a tokenizer.json")
    ap.add_argument("--old", action="append", default=[], help="an older corpus.py to compare (repeat)")
    ap.add_argument("--old-max-mb", type=float, default=float("inf"), help="skip --old on larger corpora")
    ap.add_argument("--work-dir", default=None, help="caches (default: a temporary directory, removed)")
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--num-proc", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lit_llm_bench_packing_") as tmp:
        work = Path(args.work_dir or tmp)
        rows = []
        for item in args.corpus:
            name, path = item.split("=", 1)
            old = args.old if os.path.getsize(path) / 1e6 <= args.old_max_mb else []
            rows += measure_corpus(name, path, args.tokenizer, ["new", *old], work, args.block_size, args.num_proc)
    table = markdown(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
