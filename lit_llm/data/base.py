"""What the corpus and classification data modules share: a per-split cache of tokenized data.

`TokenizedSplitsMixin` gives `prepare_data` / `setup` over the splits of `load_raw()`: each split
is built once into `<cache_dir>/<CACHE_SUBDIR>/<key>/<split>` (key: `_cache_key()`, e.g. data and
tokenizer fingerprints), written to a temporary directory and renamed, with its statistics in
`lit_llm_stats.json` last, so a directory holding that file is complete. A crash mid-build leaves
nothing behind; a concurrent writer's complete copy wins.

A data module sets `CACHE_SUBDIR`, `tokenizer`, `cache_dir`, `stats` ({} on a new tokenizer) and
implements `load_raw()`, `_cache_key()`, `_build_split(split, out_dir) -> stats` (save the split's
dataset into `out_dir`) and `_open_split(split, path)` (keep the loaded split).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc

from lit_llm.utils_io import atomic_dir, build_lock, sha256_json

STATS_FILE = "lit_llm_stats.json"


class TokenizedSplitsMixin:
    CACHE_SUBDIR: str = "tokenized"
    stats: dict[str, dict[str, Any]]

    # -- what each data module supplies
    def _cache_key(self) -> dict[str, Any]:
        raise NotImplementedError

    def _build_split(self, split: str, out_dir: Path) -> dict[str, Any]:
        raise NotImplementedError

    def _open_split(self, split: str, path: Path) -> None:
        raise NotImplementedError

    # -- shared
    @property
    def tokenized_dir(self) -> Path:
        if self.tokenizer is None:
            raise RuntimeError(f"{type(self).__name__}: call set_tokenizer(...) before prepare_data()/setup()")
        self.load_raw()
        return Path(self.cache_dir) / self.CACHE_SUBDIR / sha256_json(self._cache_key())[:32]

    def prepare_data(self) -> None:
        """Tokenize and cache every split (Lightning runs this on one process per node)."""
        for split in self.load_raw():
            self._cached_split(split)

    def setup(self, stage: str | None = None) -> None:
        """Open every split from the cache (tokenizing first if prepare_data did not run)."""
        for split in self.load_raw():
            if split not in self.stats:
                path = self._cached_split(split)
                self._open_split(split, path)
                self.stats[split] = json.loads((path / STATS_FILE).read_text())

    def _cached_split(self, split: str) -> Path:
        """The cache directory of `split`, built if absent; temporary directories are never read."""
        final = self.tokenized_dir / split
        if (final / STATS_FILE).is_file():
            return final
        with build_lock(final):  # processes sharing the cache (DDP ranks) build it once
            if (final / STATS_FILE).is_file():
                return final
            with atomic_dir(final) as tmp:
                stats = self._build_split(split, tmp)
                (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
        return final


def arrow_table(ds: datasets.Dataset):
    """The Arrow table behind a saved split (its row selection applied)."""
    if ds._indices is not None:
        ds = ds.flatten_indices()
    return ds.data.table if hasattr(ds.data, "table") else ds.data


def flat_lists(table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list column as (all values in one numpy array, row offsets [n + 1]): row i is
    values[offsets[i]:offsets[i + 1]], sliced without copying (fast, cheap in DataLoader workers)."""
    column = table.column(name).combine_chunks()
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    return column.flatten().to_numpy(zero_copy_only=False), np.concatenate([[0], np.cumsum(lengths)])


__all__ = ["TokenizedSplitsMixin", "STATS_FILE", "arrow_table", "flat_lists"]
