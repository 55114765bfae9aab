"""What every data module shares; the corpus, classification, QA and seq2seq modules hold only what is
particular to their data.

- `DataModuleProtocol`: what the orchestration (`lit_llm.run`, `lit_llm.evaluation`) asks of a data module
  besides Lightning's hooks and `load_raw` / `train_texts` / `set_tokenizer`: `max_sequence_length()`,
  `set_test_split(name)`, `set_eval_batch_size(n)`, `task_arguments()`.
- Hold-out splits: `holdout_size(n, fraction)` and `hold_out_indices(n, sizes, seed)`, the one seeded
  permutation behind every held-out validation (and test) split; `hold_out_rows(rows, fraction, seed, unit)`
  applies it to a list of records.
- Special tokens: `resolve_special_ids(tokenizer, given)` ({"pad": 0, "cls": 5, ...}) and
  `require_special_tokens(ids, names, what, hint)` (a ConfigError naming the missing ones).
- `TokenizedSplitsMixin`: the per-split cache of tokenized data (below).
- Arrow access to saved splits: `arrow_table(ds)`, `flat_lists(table, column)`; `text_batches` (tokenizer
  training text).
- `check_truncation`: a warning when more than 5% of a split is cut to the length limit, an error when all is.
- Checks of data.* settings: `require_int`, `require_fraction`, `require_choice`, `require_one_source`;
  `renamed_setting`: a renamed setting, read under its old name for one release.

Samplers and loaders (the resumable train order, DDP evaluation shards) live in `lit_llm.data.loading`;
reading files and hub datasets in `lit_llm.data.sources`; batch collators in `lit_llm.data.collate`.

`TokenizedSplitsMixin` gives `prepare_data` / `setup` over the splits of `load_raw()`: each split
is built once into `<cache_dir>/<CACHE_SUBDIR>/<key>/<split>` (key: `_cache_key()`, e.g. data and
tokenizer fingerprints) by `utils_io.cached_dir`: written to a temporary directory with its statistics in
`lit_llm_stats.json` and, last, a manifest of every file's size and checksum, then renamed. A crash mid-build
leaves nothing behind; a concurrent writer's complete copy wins; an entry found truncated or altered when it
is opened (checked once per data module) is reported in one warning and rebuilt. The mixin also holds the
state every data module has (`raw`, `data_fingerprint`, `tokenizer`, `tokenizer_fingerprint`, `special_ids`,
`stats`, and `opened`: the opened splits), `_use_tokenizer(...)` for `set_tokenizer` and `opened_split(split)`.
A data module sets `CACHE_SUBDIR`, `cache_dir` and `SPLIT_DATASET` (the map-style dataset a saved split
opens as; or it overrides `_open_split`) and implements `load_raw()`, `_cache_key()` and
`_build_split(split, out_dir) -> stats` (save the split's dataset into `out_dir`).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Iterator

import datasets
import numpy as np
import pyarrow.compute as pc
from tokenizers import Tokenizer

from lit_llm.errors import ConfigError, renamed_keys
from lit_llm.tokenization import EOS, SPECIAL_TOKENS, tokenizer_fingerprint
from lit_llm.utils_io import cached_dir, sha256_json

STATS_FILE = "lit_llm_stats.json"


# ----------------------------------------------------------------------------- the data-module protocol

class DataModuleProtocol:
    """What the orchestration asks of every data module (mixed into each; a module implements
    `max_sequence_length` and may override `test_split_names` and `task_arguments`).

    - `max_sequence_length() -> (config key, length)`: the longest sequence the data feeds the model
      and the setting to name when the model's context is shorter. Cheap: callable right after
      construction, before `load_raw()`.
    - `set_test_split(name)`: test on one named split instead of the data's test sets
      (`test_split_names()` lists those it accepts; another name is a ConfigError).
    - `set_eval_batch_size(n)`: the batch size of the validation and test loaders.
    - `task_arguments() -> dict`: the task constructor's arguments that come from the data
      ({} unless overridden; classification gives its classes).
    """

    test_names: list[str]
    eval_batch_size: int
    # conversation data (instruction tuning, preferences) is rendered with a chat template: such a data module
    # implements `resolve_chat_template(own, special_tokens)`, `set_chat_template(t)` and `chat_template`
    # (lit_llm.data.conversations.ChatDataMixin); builders.attach_tokenizer calls them
    uses_chat_template: bool = False

    def max_sequence_length(self) -> tuple[str, int]:
        raise NotImplementedError

    def test_split_names(self) -> list[str]:
        """The splits `set_test_split` accepts: by default every split of `load_raw()`."""
        return sorted(self.load_raw())

    def set_test_split(self, name: str) -> None:
        have = self.test_split_names()
        if name not in have:
            raise ConfigError(f"split={name!r} is not a split of this data (splits: {', '.join(have)}); "
                              "use one of them, or split=null for the data's test sets")
        self.test_names = [name]

    def set_eval_batch_size(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"batch_size={n!r}: the evaluation batch size must be a positive integer.")
        self.eval_batch_size = n

    def task_arguments(self) -> dict[str, Any]:
        return {}


# ----------------------------------------------------------------------------- hold-out splits

def holdout_size(n: int, fraction: float) -> int:
    """How many of `n` rows `fraction` holds out: round(n * fraction) (Python's round: half to even),
    at least 1."""
    return max(1, round(n * fraction))


def hold_out_indices(n: int, sizes: Sequence[int], seed: int | None) -> list[np.ndarray]:
    """Seeded random parts of range(n): `np.random.default_rng(seed).permutation(n)` cut into
    consecutive parts of `sizes[0]`, `sizes[1]`, ... items, then the rest (the training part, last);
    each part sorted, so rows keep their order within it. The parts (and so data fingerprints and
    caches) depend only on (n, sizes, seed): do not change the draws."""
    if any(size < 0 for size in sizes) or sum(sizes) >= n:
        raise ValueError(f"holding out {list(sizes)} of {n} rows leaves no training rows")
    perm = np.random.default_rng(seed).permutation(n)
    parts, start = [], 0
    for size in sizes:
        parts.append(np.sort(perm[start : start + size]))
        start += size
    parts.append(np.sort(perm[start:]))
    return parts


def limit_rows(n: int, limit: int | None, seed: int | None, key: str = "data.train_limit") -> np.ndarray | None:
    """The rows kept by a `limit` on a split of n rows: a seeded random `limit` of them in row order, the first
    `limit` of `np.random.default_rng(seed).permutation(n)` (as `hold_out_indices`), so with one seed a smaller
    limit keeps a subset of a larger one's rows (nested training sets for a learning curve); None when there is
    no limit or it keeps every row."""
    if limit is None:
        return None
    require_int(key, limit)
    if limit >= n:
        if limit > n:
            logging.getLogger("lit_llm").warning("%s=%d is more than the %d rows there are: keeping all of them", key, limit, n)
        return None
    return hold_out_indices(n, [limit], seed)[0]


def hold_out_rows(rows: Sequence[Any], fraction: float, seed: int | None, unit: str = "rows") -> tuple[list, list]:
    """(validation, train): `holdout_size(len(rows), fraction)` of `rows` chosen by `hold_out_indices`,
    and the rest, each in the order of `rows`. A ConfigError when no training rows would be left."""
    n = len(rows)
    n_val = holdout_size(n, fraction)
    if n_val >= n:
        raise ConfigError(f"data.val_fraction={fraction} of {n} {unit} leaves no training {unit}; lower it or set "
                          "data.validation_files.")
    validation, train = hold_out_indices(n, [n_val], seed)
    return [rows[i] for i in validation], [rows[i] for i in train]


# ----------------------------------------------------------------------------- special tokens

def resolve_special_ids(tokenizer: Tokenizer, given: Mapping[str, int] | None = None) -> dict[str, int]:
    """{"pad": id, "cls": id, ...}: `given` (keys "cls" or "<cls>"; e.g. a WordPiece tokenizer's
    [CLS]/[SEP]/[PAD] ids) first, then our SPECIAL_TOKENS that the tokenizer has."""
    out: dict[str, int] = {}
    for tok in SPECIAL_TOKENS:
        idx = tokenizer.token_to_id(tok)
        if idx is not None:
            out[tok.strip("<>")] = idx
    for name, idx in (given or {}).items():
        out[str(name).strip("<>").lower()] = int(idx)
    return out


def document_end_id(tokenizer: Tokenizer, given: Mapping[str, int] | None = None) -> int:
    """The token after every document of a packed corpus (and before a sampled one): the tokenizer's end of
    sequence (<eos>; a Hugging Face tokenizer's own, named in its config files: `given`), else its separator."""
    ids = resolve_special_ids(tokenizer, given)
    for name in ("eos", "sep"):
        if name in ids:
            return ids[name]
    raise ConfigError(f"the tokenizer has no end-of-sequence token ({EOS}, or one named eos_token in its "
                      "tokenizer_config.json) to end documents with; use a tokenizer that has one")


def require_special_tokens(ids: Mapping[str, int], names: Iterable[str], what: str, hint: str) -> None:
    """A ConfigError naming each special token of `names` ("cls", "pad", ...) missing from `ids`
    (as `resolve_special_ids` gives them). `what` says what needs them, `hint` how to fix it."""
    missing = [f"<{name}>" for name in names if name not in ids]
    if missing:
        raise ConfigError(f"{what}: the tokenizer has no {', '.join(missing)} token{'s' if len(missing) > 1 else ''}; "
                          f"{hint}.")


# ----------------------------------------------------------------------------- truncation

TRUNCATION_WARNING_SHARE = 0.05  # a split with more examples cut than this is worth a warning


def check_truncation(split: str, needed: Sequence[int], limit: int, key: str, unit: str = "examples") -> int:
    """How many of a split's examples are cut to `limit` tokens, given the tokens each would need. More than
    5% cut: a warning naming `key` and the percentiles of the needed lengths; every one cut: a ConfigError
    (the data cannot fit: a wrong setting or a tokenizer that pads to a fixed length)."""
    needed = np.asarray(needed, dtype=np.int64)
    n, cut = len(needed), int(np.sum(needed > limit))
    if n == 0 or cut <= TRUNCATION_WARNING_SHARE * n:
        return cut
    p50, p90, p95, p99 = (int(v) for v in np.percentile(needed, [50, 90, 95, 99], method="higher"))
    lengths = f"lengths in tokens: median {p50}, p90 {p90}, p95 {p95}, p99 {p99}, max {int(needed.max())}"
    if cut == n:
        raise ConfigError(f"{key}={limit}: every one of the {n} {unit} of the {split} split is longer ({lengths}); "
                          f"raise {key} (e.g. to {p95}) or check the tokenizer")
    logging.getLogger("lit_llm").warning(
        "data: %s: %d of %d %s (%.1f%%) are truncated to %s=%d (%s); raise %s (e.g. to %d) to keep them whole",
        split, cut, n, unit, 100 * cut / n, key, limit, lengths, key, p95)
    return cut


# ----------------------------------------------------------------------------- overlapping windows

def window_starts(n_context: int, window: int, doc_stride: int) -> list[int]:
    """Start tokens of the windows of `window` tokens over `n_context` tokens, consecutive ones sharing
    `doc_stride` tokens (Hugging Face's meaning of `stride`: the overlap, so a window starts
    `window - doc_stride` tokens after the previous one); the last window ends at the text's end (it may be
    shorter). Used by QA contexts and by classification's `data.long_inputs=windows`."""
    if window <= doc_stride:
        raise ValueError(f"a window of {window} context tokens cannot overlap the next by doc_stride={doc_stride}")
    starts, start = [0], 0
    while start + window < n_context:
        start += window - doc_stride
        starts.append(start)
    return starts


# ----------------------------------------------------------------------------- checks of data.* settings

def require_int(key: str, value: Any, minimum: int = 1, why: str = "") -> None:
    """A ConfigError unless `value` is an integer (not a bool) >= `minimum`; `why` ends the message."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        need = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{key}={value!r} must be {need}{why}.")


def require_fraction(key: str, value: Any, zero_ok: bool = False, why: str = "") -> None:
    """A ConfigError unless `value` is a number in (0, 1) ([0, 1) with `zero_ok`); `why` ends the message."""
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if not number or not (0 <= value < 1 if zero_ok else 0 < value < 1):
        raise ConfigError(f"{key}={value!r} must be a number in {'[0, 1)' if zero_ok else '(0, 1)'}{why}.")


def require_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {list(choices)}; pick one of them.")


def require_one_source(files: Any, hub_name: str | None, files_key: str = "data.files") -> None:
    """A ConfigError unless exactly one of the files (`files_key`) and `data.hub_name` is set."""
    if (files is None) == (hub_name is None):
        raise ConfigError(f"{files_key} and data.hub_name: set exactly one of them "
                          f"(got {files_key.rsplit('.', 1)[-1]}={files!r}, hub_name={hub_name!r}).")


def renamed_setting(old: str, new: str, old_value: Any, new_value: Any) -> Any:
    """The value of `data.<new>`, also read from its old name `data.<old>` for one release
    (`lit_llm.errors.renamed_keys`); None when neither is given."""
    given = {k: v for k, v in ((old, old_value), (new, new_value)) if v is not None}
    return renamed_keys(given, {old: new}, "data").get(new)


# ----------------------------------------------------------------------------- the tokenized-split cache


class TokenizedSplitsMixin:
    CACHE_SUBDIR: str = "tokenized"
    SPLIT_DATASET: Any = None  # what a saved split opens as: SPLIT_DATASET(datasets.Dataset)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.raw: datasets.DatasetDict | None = None
        self.data_fingerprint: str | None = None
        self.tokenizer: Tokenizer | None = None
        self.tokenizer_fingerprint: str | None = None
        self.special_ids: dict[str, int] = {}
        self.stats: dict[str, dict[str, Any]] = {}  # per split, from the cache
        self.opened: dict[str, Any] = {}  # per split, `_open_split`'s dataset
        self._checked: set[Path] = set()  # cache entries verified against their manifest by this data module

    # -- what each data module supplies
    def _cache_key(self) -> dict[str, Any]:
        raise NotImplementedError

    def _build_split(self, split: str, out_dir: Path) -> dict[str, Any]:
        raise NotImplementedError

    def _open_split(self, split: str, path: Path) -> None:
        self.opened[split] = self.SPLIT_DATASET(datasets.load_from_disk(str(path)))

    # -- shared
    def _use_tokenizer(self, tokenizer: Tokenizer, fingerprint: str | None, special_ids: Mapping[str, int]) -> None:
        """Tokenize with `tokenizer` (its fingerprint computed when None) from now on; splits opened
        with another tokenizer are dropped."""
        self.tokenizer = tokenizer
        self.tokenizer_fingerprint = fingerprint or tokenizer_fingerprint(tokenizer)
        self.special_ids = dict(special_ids)
        self.opened, self.stats = {}, {}

    def opened_split(self, split: str) -> Any:
        """The opened dataset of `split` (opening every split first if needed)."""
        if split not in self.opened:
            self.setup()
        return self.opened[split]

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
        """The cache directory of `split`: built if absent, rebuilt (one warning) if it fails its manifest;
        temporary directories are never read. Checked once per data module: `prepare_data` then `setup`
        read the files once."""
        final = self.tokenized_dir / split
        if final not in self._checked:
            cached_dir(final, lambda tmp: self._write_split(split, tmp))  # DDP ranks build it once
            self._checked.add(final)
        return final

    def _write_split(self, split: str, out_dir: Path) -> None:
        stats = self._build_split(split, out_dir)
        (out_dir / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")


# ----------------------------------------------------------------------------- Arrow access

def text_batches(ds: datasets.Dataset, columns: Iterable[str], batch_size: int) -> Iterator[list[str]]:
    """Batches (lists of str) of each column of `columns` in turn, for tokenizer training."""
    for column in columns:
        for start in range(0, len(ds), batch_size):
            yield ds[start : start + batch_size][column]


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


__all__ = [
    "DataModuleProtocol", "holdout_size", "hold_out_indices", "hold_out_rows", "text_batches", "resolve_special_ids", "require_special_tokens",
    "renamed_setting", "require_int", "require_fraction", "require_choice", "require_one_source",
    "TokenizedSplitsMixin", "STATS_FILE", "arrow_table", "flat_lists", "window_starts",
]
