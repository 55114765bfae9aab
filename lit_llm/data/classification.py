"""Sequence classification data: labelled text (or text pairs) -> `[cls] a [sep] (b [sep])` -> padded batches.

Flow (same as `CorpusDataModule`; the orchestration calls these in order):

    dm = ClassificationDataModule(train_files=".../train.tsv", test_files=".../dev.tsv", label_names=[...])
    dm.load_raw()                          # train/validation(/test) with columns text(, text_pair), label
    tok, tok_fp = get_tokenizer(..., texts=dm.train_texts, fingerprint=dm.data_fingerprint)
    dm.set_tokenizer(tok, tok_fp)          # special_ids={"cls":..,"sep":..,"pad":..} for a WordPiece tokenizer
    trainer.fit(model, datamodule=dm)      # prepare_data + setup: tokenize, cache

Labels become class ids 0..num_labels-1 through `label_names`: a list (string labels are looked up
by name, integer labels index the list), a file with one name per line, a mapping
{label in the data: name} (e.g. AG News' 1..4), or None (the sorted distinct labels of the
train files). Missing validation/test splits are held out of the train files with a seeded
random permutation (`val_fraction`, `test_fraction`, `split_seed`).

Tokenized splits are cached in `<cache_dir>/classification/<key>/<split>` (key: data
fingerprint, tokenizer fingerprint, special ids, max_length, version), built in a temporary
directory and renamed (`utils_io.atomic_dir`). Batches: {"input_ids", "attention_mask",
"labels"} (+ "token_type_ids" for pairs), padded to the longest example of the batch.

Long inputs (`long_inputs`): `truncate` (the default) cuts a text to `max_length` tokens; `windows` cuts it into
overlapping windows instead (`_encode_windows`): each window is a whole input `[cls] window [sep]` of at most
`max_length` tokens, consecutive windows sharing `doc_stride` tokens (Hugging Face's meaning of stride, as QA's
`data.doc_stride`: the overlap, not the step), at most `max_windows` per document (the rest of a longer text is
dropped and counted). A text pair windows one text and repeats the other (at most half the room) in every window:
`windowed_text=second` (the default) windows the second (AG News' description, like QA's context), `first` the
first (an NLI premise); each window keeps the order first-then-second and token types 0 / 1. A document that fits is one window equal to its `truncate`
encoding. An example stays one document (its windows flattened, `window_lengths`); `WindowCollator` makes one
row per window plus `window_doc` (the document of each row), so a batch always holds whole documents and the task
aggregates the windows' logits per document (`task.window_aggregation`).
"""
from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Iterator

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytorch_lightning as pl
import torch
from tokenizers import Tokenizer

from lit_llm.data.base import (
    DataModuleProtocol,
    TokenizedSplitsMixin,
    arrow_table,
    check_truncation,
    flat_lists,
    hold_out_indices,
    limit_rows,
    require_choice,
    require_fraction,
    require_int,
    require_one_source,
    require_special_tokens,
    resolve_special_ids,
    text_batches,
    window_starts,
)
from lit_llm.data.collate import WindowCollator, pad_collate
from lit_llm.data.loading import (
    SAMPLERS as EXAMPLE_SAMPLERS,
)
from lit_llm.data.loading import (
    BucketRandomSampler,
    ExampleLoadersMixin,
    ResumableRandomSampler,
    ResumableTrainMixin,
)
from lit_llm.data.sources import file_extension, load_files, load_hub_dataset, resolve_files
from lit_llm.errors import ConfigError
from lit_llm.utils_io import sha256_file, sha256_json

log = logging.getLogger("lit_llm")

CLASSIFICATION_VERSION = 1  # bump when loading/tokenization changes: old cache entries are then ignored
SPLIT_KEYS = {"train": "data.train_files", "validation": "data.validation_files", "test": "data.test_files"}
# roles a decoder-only tokenizer lacks: [cls] -> its <bos>, [sep] and padding -> its <eos>
# roles a tokenizer lacks -> the ones that stand in, first found: GPT-2's <|endoftext|> is bos, eos and pad; a
# decoder without <bos> (Qwen2) starts and ends the text with its end-of-text token (pooling=last reads the end)
FALLBACKS = {"cls": ("bos", "eos"), "sep": ("eos",), "pad": ("eos",)}
SAMPLERS = (*EXAMPLE_SAMPLERS, "balanced")  # data.sampler: the shared train orders (loading.py) + balanced
LONG_INPUTS = ("truncate", "windows")  # data.long_inputs: what happens to a text longer than data.max_length
WINDOWED_TEXTS = ("second", "first")  # data.windowed_text: which text of a pair long_inputs=windows cuts
_INT = re.compile(r"^[+-]?\d+$")


# ----------------------------------------------------------------------------- labels

def label_key(value: Any) -> int | str:
    """A label as found in data, normalised: integers (also 1.0, "1") -> int, anything else -> str."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    text = str(value).strip()
    return int(text) if _INT.match(text) else text


def _sort_keys(keys: set) -> list:
    return sorted(keys, key=lambda k: (isinstance(k, str), k if isinstance(k, str) else int(k)))


def read_label_names(spec: Any) -> tuple[list[str], dict[int | str, int] | None]:
    """(class names, lookup {label key: class id}) from `data.label_names`; (…, None) for None.

    A list gives names whose ids are their positions (string labels match a name, integer
    labels index the list); a str is a file with one name per line; a mapping is
    {label in the data: name} in class-id order.
    """
    if spec is None:
        return [], None
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"data.label_names={os.fspath(spec)!r}: no such file; give a list of class names or a file "
                f"with one name per line.")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        where = f" (read from {path})"
        spec = names
    else:
        where = ""
    if isinstance(spec, Mapping):
        names = [str(v) for v in spec.values()]
        lookup = {label_key(k): i for i, k in enumerate(spec)}
        if len(lookup) != len(spec):
            raise ConfigError(f"data.label_names={dict(spec)}: two labels normalise to the same value; fix the keys.")
    elif isinstance(spec, Sequence):
        names = [str(v) for v in spec]
        lookup = {**{i: i for i in range(len(names))}, **{label_key(n): i for i, n in enumerate(names)
                                                          if isinstance(label_key(n), str)}}
    else:
        raise ConfigError(f"data.label_names={spec!r}: expected a list of names, a file path, a mapping or null.")
    if len(names) < 2:
        raise ConfigError(f"data.label_names={names}{where}: a classifier needs at least 2 classes.")
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        raise ConfigError(f"data.label_names={names}{where} repeats {dupes}; every class needs its own name.")
    return names, lookup


# ----------------------------------------------------------------------------- tokenization

def longest_first(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """How many tokens of a pair to keep within `budget`, as transformers' `truncation="longest_first"`: the
    shorter text keeps min(its length, budget // 2), the longer one the rest."""
    if len_a + len_b <= budget:
        return len_a, len_b
    if len_a <= len_b:
        keep_a = min(len_a, budget // 2)
        return keep_a, budget - keep_a
    keep_b = min(len_b, budget // 2)
    return budget - keep_b, keep_b


def _encode_examples(batch: dict[str, list], tokenizer: Tokenizer, cls_id: int, sep_id: int,
                     max_length: int) -> dict[str, list]:
    """`[cls] a [sep]` or `[cls] a [sep] b [sep]` (token types 0/1), at most `max_length` tokens, texts cut
    longest first; `needed`: the tokens the example has before truncation. A tokenizer with a post-processor of
    its own (a Hugging Face file: BERT's template, RoBERTa's `<s> a </s></s> b </s>`) adds its special tokens and
    token types instead, exactly as `transformers` does; ours have none."""
    pair = "text_pair" in batch
    first = tokenizer.encode_batch(batch["text"], add_special_tokens=False)
    second = tokenizer.encode_batch(batch["text_pair"], add_special_tokens=False) if pair else [None] * len(first)
    # the tokenizer's own template when it adds special tokens (a GPT-2 post-processor adds none: ours then)
    own = tokenizer.post_processor is not None and tokenizer.num_special_tokens_to_add(pair) > 0
    specials = tokenizer.num_special_tokens_to_add(pair) if own else 3 if pair else 2
    out: dict[str, list] = {"input_ids": [], "label": batch["label"], "needed": []}
    if pair:
        out["token_type_ids"] = []
    for enc_a, enc_b in zip(first, second):
        len_a, len_b = len(enc_a.ids), len(enc_b.ids) if pair else 0
        keep_a, keep_b = longest_first(len_a, len_b, max_length - specials)
        if own:
            enc_a.truncate(keep_a)
            if pair:
                enc_b.truncate(keep_b)
            merged = tokenizer.post_process(enc_a, enc_b, add_special_tokens=True)
            ids, types = merged.ids, merged.type_ids
        elif pair:
            ids = [cls_id] + enc_a.ids[:keep_a] + [sep_id] + enc_b.ids[:keep_b] + [sep_id]
            types = [0] * (keep_a + 2) + [1] * (keep_b + 1)
        else:
            ids, types = [cls_id] + enc_a.ids[:keep_a] + [sep_id], None
        out["input_ids"].append(ids)
        out["needed"].append(len_a + len_b + specials)
        if pair:
            out["token_type_ids"].append(types)
    out["length"] = [len(ids) for ids in out["input_ids"]]
    return out


def _template(tokenizer: Tokenizer, pair: bool) -> tuple[bool, int]:
    """(whether the tokenizer adds its own special tokens, how many special tokens an input has)."""
    own = tokenizer.post_processor is not None and tokenizer.num_special_tokens_to_add(pair) > 0
    return own, tokenizer.num_special_tokens_to_add(pair) if own else 3 if pair else 2


def window_room(max_length: int, specials: int, pair: bool) -> int:
    """The fewest windowed tokens a window holds: the room left by the special tokens, half of it for a pair
    (the repeated text keeps at most the other half)."""
    room = max_length - specials
    return room - room // 2 if pair else room


def _encode_windows(batch: dict[str, list], tokenizer: Tokenizer, cls_id: int, sep_id: int, max_length: int,
                    doc_stride: int, max_windows: int | None, windowed_text: str = "second") -> dict[str, list]:
    """Like `_encode_examples`, but a document longer than `max_length` becomes overlapping windows (the module
    docstring; `windowed_text`: which text of a pair is windowed): `input_ids` (and `token_type_ids`) are its
    windows one after another, `window_lengths` their lengths; `needed`: the tokens one input would need,
    `dropped`: the text tokens beyond `max_windows`."""
    pair = "text_pair" in batch
    first = tokenizer.encode_batch(batch["text"], add_special_tokens=False)
    second = tokenizer.encode_batch(batch["text_pair"], add_special_tokens=False) if pair else [None] * len(first)
    own, specials = _template(tokenizer, pair)
    room = max_length - specials
    out: dict[str, list] = {"input_ids": [], "window_lengths": [], "label": batch["label"], "needed": [],
                            "dropped": []}
    if pair:
        out["token_type_ids"] = []
    cut_first = pair and windowed_text == "first"
    for enc_a, enc_b in zip(first, second):
        len_a, len_b = len(enc_a.ids), len(enc_b.ids) if pair else 0
        text, other = (enc_a, enc_b) if cut_first or not pair else (enc_b, enc_a)  # windowed, repeated
        keep = 0 if not pair else len(other.ids) if len_a + len_b <= room else min(len(other.ids), room // 2)
        window, n_text = room - keep, len(text.ids)
        fits = n_text <= window
        starts = [0] if fits else window_starts(n_text, window, doc_stride)[:max_windows]
        if own:  # the tokenizer's template around every window: its overflowing pieces are exactly `starts`
            if pair:
                other.truncate(keep)
            if not fits:
                text.truncate(window, stride=doc_stride)
            pieces = ([text] + list(text.overflowing))[: len(starts)]
            halves = [(p, None) if not pair else (p, other) if cut_first else (other, p) for p in pieces]
            merged = [tokenizer.post_process(a, b, add_special_tokens=True) for a, b in halves]
            ids, types = [m.ids for m in merged], [m.type_ids for m in merged]
        else:
            cut = [text.ids[s : s + window] for s in starts]
            if pair:  # first-then-second in every window, token types 0 ([cls] a [sep]) / 1 (b [sep])
                kept = other.ids[:keep]
                halves = [(w, kept) if cut_first else (kept, w) for w in cut]
                ids = [[cls_id] + a + [sep_id] + b + [sep_id] for a, b in halves]
                types = [[0] * (len(a) + 2) + [1] * (len(b) + 1) for a, b in halves]
            else:
                ids, types = [[cls_id] + w + [sep_id] for w in cut], []
        out["input_ids"].append([t for w in ids for t in w])
        out["window_lengths"].append([len(w) for w in ids])
        out["needed"].append(len_a + len_b + specials)
        out["dropped"].append(max(0, n_text - (starts[-1] + window)))  # n_text: before any truncate
        if pair:
            out["token_type_ids"].append([t for w in types for t in w])
    out["length"] = [len(ids) for ids in out["input_ids"]]
    return out


class TokenizedExamples(torch.utils.data.Dataset):
    """Tokenized examples as flat numpy arrays + offsets (fast indexing, cheap in workers)."""

    def __init__(self, ds: datasets.Dataset):
        table = arrow_table(ds)
        self.ids, self.offsets = flat_lists(table, "input_ids")
        self.lengths = np.diff(self.offsets)
        self.types = flat_lists(table, "token_type_ids")[0] if "token_type_ids" in table.column_names else None
        self.labels = table.column("label").to_numpy()
        # data.long_inputs=windows: a document's windows lie one after another in its input_ids
        windowed = "window_lengths" in table.column_names
        self.window_lengths, self.window_offsets = flat_lists(table, "window_lengths") if windowed else (None, None)
        # what a batch pads to (length bucketing): a windowed document's longest window, else its length
        self.pad_lengths = (np.maximum.reduceat(self.window_lengths, self.window_offsets[:-1])
                            if windowed and len(self.labels) else self.lengths)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        lo, hi = self.offsets[index], self.offsets[index + 1]
        item = {"input_ids": self.ids[lo:hi], "labels": int(self.labels[index])}
        if self.types is not None:
            item["token_type_ids"] = self.types[lo:hi]
        if self.window_lengths is not None:
            item["window_lengths"] = self.window_lengths[self.window_offsets[index] : self.window_offsets[index + 1]]
        item["example_index"] = int(index)  # evaluation goes by length: records map back through it
        return item


class BalancedRandomSampler(ResumableRandomSampler):
    """`ResumableRandomSampler` whose epochs draw every class equally often (for imbalanced labels).

    Epoch e (generator `np.random.default_rng((seed, e))`, the same on every replica): each class's examples are
    shuffled and dealt round-robin to the replicas, so the replicas' example sets are disjoint (a class with
    fewer examples than replicas is shared whole). Each replica then fills its `num_samples` positions (the
    plain sampler's epoch length) with equal quotas of the classes present (the remainder to randomly chosen
    classes), in a random order; a class's positions cycle through reshuffled passes over its examples, so a
    rare class repeats its examples and a common one leaves some out until a later epoch. A resume skips the
    samples already seen, as with the plain sampler.
    """

    def __init__(self, labels: np.ndarray, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        super().__init__(len(labels), seed, num_replicas=num_replicas, rank=rank)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = np.unique(self.labels)

    def permutation(self, epoch: int | None = None) -> list[int]:
        epoch = self.epoch if epoch is None else epoch
        deal = np.random.default_rng((self.seed, epoch))
        mine = []  # per class, this replica's examples
        for c in self.classes:
            members = deal.permutation(np.flatnonzero(self.labels == c))
            mine.append(members[self.rank :: self.num_replicas] if len(members) >= self.num_replicas else members)
        rng = np.random.default_rng((self.seed, epoch, 1 + self.rank))
        n, k = self.num_samples, len(self.classes)
        quota = np.full(k, n // k)
        quota[rng.choice(k, n % k, replace=False)] += 1
        slots = rng.permutation(np.repeat(np.arange(k), quota))
        order = np.empty(n, dtype=np.int64)
        for i, members in enumerate(mine):
            passes = -(-quota[i] // len(members))  # ceil: reshuffled passes over the class's examples
            order[slots == i] = np.concatenate([rng.permutation(members) for _ in range(passes)])[: quota[i]]
        return order.tolist()


# ----------------------------------------------------------------------------- data module

class ClassificationDataModule(DataModuleProtocol, TokenizedSplitsMixin, ExampleLoadersMixin, ResumableTrainMixin,
                               pl.LightningDataModule):
    """Labelled text (or pairs) from files or a hub dataset -> padded classification batches.

    Files: `train_files` (required unless `hub_name`), `validation_files`, `test_files`: a path,
    glob or list of them; .tsv (GLUE style, no quoting), .csv, .jsonl/.json, .parquet.
    `column_names` names the columns of csv/tsv files without a header row (e.g. AG News).
    When validation (test) is missing it is a seeded `val_fraction` (`test_fraction`) of the
    train rows. Without any test split, testing runs on the validation split
    (`test_names == ["validation"]`), else `test_names == ["test"]`. `train_limit` keeps a seeded random subset
    of the remaining train rows (`base.limit_rows`: a labelled-data budget for learning curves).
    `sampler` orders the train examples: `random` (a seeded shuffle), `bucket` (batches of similar lengths,
    `BucketRandomSampler`; `bucket_by_length=true` is the older spelling) or `balanced` (classes equally often,
    `BalancedRandomSampler`); all resume exactly.
    """

    CACHE_SUBDIR = "classification"  # <cache_dir>/classification/<key>/<split>
    SPLIT_DATASET = TokenizedExamples

    def __init__(
        self,
        train_files: Any = None,
        validation_files: Any = None,
        test_files: Any = None,
        hub_name: str | None = None,
        hub_config: str | None = None,
        text_column: str = "sentence",
        text_pair_column: str | None = None,
        label_column: str = "label",
        label_names: list[str] | str | Mapping[Any, str] | None = None,
        column_names: list[str] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        split_seed: int = 1234,
        train_limit: int | None = None,
        train_limit_seed: int | None = None,
        max_length: int = 128,
        long_inputs: str = "truncate",
        doc_stride: int = 16,
        max_windows: int | None = 8,
        windowed_text: str = "second",
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        bucket_by_length: bool = False,
        sampler: str = "random",
        num_workers: int = 0,
        num_proc: int = 1,
        cache_dir: str = ".cache",
        shuffle_seed: int = 1234,
    ):
        super().__init__()
        require_one_source(train_files, hub_name, "data.train_files")
        require_int("data.max_length", max_length, 4, why=" ([cls] a [sep] b [sep])")
        for key, value in (("data.batch_size", batch_size), ("data.eval_batch_size", eval_batch_size)):
            if value is not None:
                require_int(key, value)
        for key, value in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
            require_fraction(key, value, zero_ok=True, why=", e.g. 0.1")
        if sampler not in SAMPLERS:
            raise ConfigError(f"data.sampler={sampler!r} is not one of {list(SAMPLERS)}; random (shuffle), bucket "
                              "(similar lengths per batch) or balanced (classes equally often).")
        if bucket_by_length and sampler == "balanced":
            raise ConfigError("data.bucket_by_length=true and data.sampler=balanced: choose one train order; "
                              "drop bucket_by_length (it means data.sampler=bucket).")
        self._check_windows(long_inputs, doc_stride, max_windows, max_length, text_pair_column is not None,
                            windowed_text=windowed_text)
        if val_fraction + test_fraction >= 1:
            raise ConfigError(f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} leaves no "
                              "training rows; lower them.")
        self.files = {"train": train_files, "validation": validation_files, "test": test_files}
        self.hub_name = hub_name
        self.hub_config = hub_config
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_column = label_column
        self.label_names_spec = label_names
        self.column_names = list(column_names) if column_names is not None else None
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.train_limit = train_limit
        self.train_limit_seed = split_seed if train_limit_seed is None else train_limit_seed
        self.max_length = max_length
        self.long_inputs, self.doc_stride, self.max_windows = long_inputs, doc_stride, max_windows
        self.windowed_text = windowed_text
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.bucket_by_length = bool(bucket_by_length)
        self.sampler = sampler
        self.num_workers = num_workers
        self.num_proc = num_proc
        self.cache_dir = os.fspath(cache_dir)
        self.shuffle_seed = shuffle_seed

        self._names: list[str] = []
        self.test_names: list[str] = ["test"]

    @staticmethod
    def _check_windows(long_inputs: str, doc_stride: Any, max_windows: Any, max_length: int, pair: bool,
                       specials: int | None = None, windowed_text: str = "second") -> None:
        """ConfigErrors for data.long_inputs / doc_stride / max_windows / windowed_text (`specials`: the
        tokenizer's special tokens per input, once known; before, ours: 2, or 3 for a pair)."""
        require_choice("data.long_inputs", long_inputs, LONG_INPUTS)
        if windowed_text not in WINDOWED_TEXTS:
            raise ConfigError(f"data.windowed_text={windowed_text!r} is not one of {list(WINDOWED_TEXTS)}: which "
                              "text of a pair data.long_inputs=windows cuts into windows (the other is repeated in "
                              "each); use second (e.g. AG News' description) or first (an NLI premise).")
        if long_inputs != "windows":
            return
        require_int("data.doc_stride", doc_stride, 0, why=" (the tokens consecutive windows share)")
        if max_windows is not None:
            require_int("data.max_windows", max_windows, why=" or null (no cap): the most windows per document")
        room = window_room(max_length, specials or (3 if pair else 2), pair)
        if doc_stride >= room:
            raise ConfigError(
                f"data.doc_stride={doc_stride} leaves no new text per window: with data.max_length={max_length} a "
                f"window holds at least {room} {windowed_text + '-text ' if pair else ''}tokens; lower data.doc_stride below "
                f"{room} (e.g. {room // 4}) or raise data.max_length.")

    @property
    def examples(self) -> dict[str, TokenizedExamples]:
        """The opened splits: {split: TokenizedExamples}."""
        return self.opened

    # -- classes -----------------------------------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        """Class names in class-id order (loads the data when `label_names` was not given)."""
        if not self._names:
            self.load_raw()
        return list(self._names)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    # -- the data-module protocol (base.DataModuleProtocol) -----------------------------------
    def max_sequence_length(self) -> tuple[str, int]:
        return "data.max_length", self.max_length

    def task_arguments(self) -> dict[str, Any]:
        """The classifier's classes and the train split's examples per class (for task.class_weights=balanced):
        {"num_labels", "label_names", "class_counts"} (loads the data when needed)."""
        return {"num_labels": self.num_labels, "label_names": self.label_names, "class_counts": self.class_counts()}

    def class_counts(self) -> list[int]:
        """Train examples per class, in class-id order."""
        labels = np.asarray(self.load_raw()["train"]["label"], dtype=np.int64)
        return np.bincount(labels, minlength=self.num_labels).tolist()

    # -- 1. raw examples -----------------------------------------------------------------------
    def load_raw(self) -> datasets.DatasetDict:
        """Load, check and split the data; set `raw`, `label_names`, `data_fingerprint`, `test_names`."""
        if self.raw is not None:
            return self.raw
        parts, layout = self._load_sources()
        names, lookup = read_label_names(self.label_names_spec)
        if lookup is None:  # the classes are the train split's distinct labels
            keys = _sort_keys({label_key(v) for _, table in parts["train"] for v in table.column("label").to_pylist()})
            if len(keys) < 2:
                raise ConfigError(
                    f"data.label_column={self.label_column!r}: the train split has {len(keys)} distinct label(s) "
                    f"({keys}); a classifier needs at least 2; check the column or set data.label_names.")
            names, lookup = [str(k) for k in keys], {k: i for i, k in enumerate(keys)}
            log.info("data: classes from the train split's labels: %s", names)
        self._names = names
        splits = {split: _concat([self._map_labels(table, where, names, lookup) for where, table in tables])
                  for split, tables in parts.items()}

        holdout: dict[str, Any] = {}
        missing = [s for s in ("test", "validation") if s not in splits
                   and (s == "validation" or self.test_fraction > 0)]
        if missing:
            splits.update(self._hold_out(splits.pop("train"), missing))
            holdout = {"val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
                       "seed": self.split_seed, "splits": missing}
        keep = limit_rows(len(splits["train"]), self.train_limit, self.train_limit_seed)
        if keep is not None:  # a labelled-data budget: validation and test stay whole
            splits["train"] = splits["train"].select(keep)
            holdout["train_limit"] = {"rows": self.train_limit, "seed": self.train_limit_seed}
        order = [s for s in ("train", "validation", "test") if s in splits]
        self.raw = datasets.DatasetDict({s: splits[s] for s in order})
        self.test_names = ["test"] if "test" in splits else ["validation"]
        if "test" not in splits:
            log.info("data: no test split (set data.test_files or data.test_fraction); testing on validation")
        self.data_fingerprint = sha256_json({
            "version": CLASSIFICATION_VERSION, "sources": layout, "holdout": holdout,
            "columns": [self.text_column, self.text_pair_column, self.label_column, self.column_names],
            "labels": [names, sorted(lookup.items(), key=lambda kv: (kv[1], str(kv[0])))],
        })
        for split, ds in self.raw.items():
            counts = np.bincount(np.asarray(ds["label"], dtype=np.int64), minlength=len(names)).tolist()
            log.info("data split %s: %d examples, per class %s", split, len(ds), dict(zip(names, counts)))
        return self.raw

    def _load_sources(self) -> tuple[dict[str, list[tuple[str, pa.Table]]], dict[str, Any]]:
        """{split: [(where, standardized table), ...]} (one entry per file) and a content layout."""
        hf_cache = os.path.join(self.cache_dir, "hf_datasets")
        parts: dict[str, list[tuple[str, pa.Table]]] = {}
        layout: dict[str, Any] = {}
        if self.hub_name is not None:
            source = load_hub_dataset(self.hub_name, self.hub_config, hf_cache)
            for split in ("train", "validation", "test"):
                if split not in source:
                    continue
                where = f"data.hub_name={self.hub_name!r} split {split!r}"
                table = self._standardize(source[split], where)
                if split != "train" and _unlabelled(table):
                    log.info("data: ignoring %s: every label is -1 (unlabelled, as GLUE's test splits)", where)
                    continue
                parts[split] = [(where, table)]
                layout[split] = {"hub": self.hub_name, "config": self.hub_config,
                                 "fingerprint": source[split]._fingerprint}
            if "train" not in parts:
                raise ConfigError(f"data.hub_name={self.hub_name!r} has no 'train' split (splits: {list(source)}); "
                                  "use data.train_files instead.")
        extra = {"column_names": self.column_names} if self.column_names else None
        for split, spec in self.files.items():
            if spec is None:
                continue
            key = SPLIT_KEYS[split]
            parts[split], layout[split] = [], []
            for path in resolve_files(spec, key):
                ds, loader = load_files([path], split, "line", hf_cache, key, builder_kwargs=extra)
                parts[split].append((f"{key} ({path})", self._standardize(ds, f"{path}", key)))
                layout[split].append({"file": sha256_file(path), "loader": loader})
        return parts, layout

    def _standardize(self, ds: datasets.Dataset, where: str, files_key: str | None = None) -> pa.Table:
        """Columns text (+ text_pair), label of `ds`, checked: present, text as strings, no nulls."""
        table = arrow_table(ds)
        if len(table) == 0:
            raise ConfigError(f"{where} has no rows; fix the file or drop {files_key or 'the split'}.")
        hint = (" (for a csv/tsv file without a header row, set data.column_names=[...])"
                if files_key and not self.column_names and file_extension(where) in (".csv", ".tsv") else "")
        columns: dict[str, pa.ChunkedArray] = {}
        wanted = [("text", self.text_column, "data.text_column"), ("label", self.label_column, "data.label_column")]
        if self.text_pair_column is not None:
            wanted.insert(1, ("text_pair", self.text_pair_column, "data.text_pair_column"))
        for name, column, key in wanted:
            if column not in table.column_names:
                raise ConfigError(f"{key}={column!r} is not a column of {where}; its columns are "
                                  f"{table.column_names}; set {key}=<one of them>{hint}.")
            values = table.column(column)
            if values.null_count:
                rows = pc.indices_nonzero(pc.is_null(values)).to_pylist()[:5]
                raise ConfigError(
                    f"{key}={column!r}: {values.null_count} null values in {where} (rows "
                    f"{', '.join(str(r + 1) for r in rows)}{', ...' if values.null_count > 5 else ''}): an empty field, "
                    f"or a row with fewer fields than the header; fill or drop those rows.")
            if name != "label":
                if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                    raise ConfigError(f"{key}={column!r} in {where} holds {values.type}, not text; set {key} "
                                      f"to a text column (columns: {table.column_names}).")
                values = values.cast(pa.string())
            columns[name] = values
        return pa.table(columns)

    def _map_labels(self, table: pa.Table, where: str, names: list[str], lookup: dict) -> pa.Table:
        raw = table.column("label").to_pylist()
        ids = [lookup.get(label_key(v)) for v in raw]
        if None in ids:
            row = ids.index(None)
            if self.label_names_spec is None:
                head = (f"data.label_names is not set, so the classes are the train split's labels {names}: "
                        f"label {raw[row]!r} in {where} row {row + 1} is not one of them")
            else:
                indexable = not isinstance(self.label_names_spec, Mapping)  # integer labels index the list
                allowed = names + ([f"0..{len(names) - 1}"] if indexable else [])
                head = (f"data.label_names={names}: label {raw[row]!r} in {where} row {row + 1} is not one of "
                        f"{allowed}")
            n_bad = ids.count(None)
            raise ConfigError(f"{head} ({n_bad} such row{'s' if n_bad > 1 else ''}); add the class to "
                              f"data.label_names or fix data.label_column={self.label_column!r}.")
        return table.set_column(table.column_names.index("label"), "label", pa.array(ids, pa.int64()))

    def _hold_out(self, train: datasets.Dataset, missing: list[str]) -> dict[str, datasets.Dataset]:
        """Seeded random validation/test parts of the train rows (row order kept in each part)."""
        n = len(train)
        fractions = {"test": self.test_fraction, "validation": self.val_fraction}
        sizes = {s: round(n * fractions[s]) for s in missing}
        for split, size in sizes.items():
            key = "data.val_fraction" if split == "validation" else "data.test_fraction"
            if size < 1:
                raise ConfigError(
                    f"{key}={fractions[split]} of {n} train rows is an empty {split} split; raise {key} or "
                    f"set {SPLIT_KEYS[split]}.")
        if n - sum(sizes.values()) < 1:
            raise ConfigError(f"holding out {sizes} of {n} train rows leaves no training rows; lower "
                              "data.val_fraction / data.test_fraction or add data.")
        # test first, then validation (the order of `missing`): fixed, whatever the fractions
        *held, rest = hold_out_indices(n, [sizes[s] for s in missing], self.split_seed)
        return {**{split: train.select(rows) for split, rows in zip(missing, held)}, "train": train.select(rest)}

    # -- 2./3. tokenizer ---------------------------------------------------------------------
    def train_texts(self, batch_size: int = 1000) -> Iterator[list[str]]:
        """Batches of the train split's texts (and text pairs), for tokenizer training."""
        train = self.load_raw()["train"]
        return text_batches(train, [c for c in ("text", "text_pair") if c in train.column_names], batch_size)

    def set_tokenizer(self, tokenizer: Tokenizer, tokenizer_fingerprint: str | None = None,
                      special_ids: Mapping[str, int] | None = None) -> None:
        """Use `tokenizer`. `special_ids` maps "cls", "sep", "pad" to ids (default: our
        <cls> <sep> <pad>; a Hugging Face WordPiece tokenizer passes its [CLS] [SEP] [PAD]; keys
        may also be written "<cls>"). A tokenizer with only <bos>/<eos> (GPT-2) uses them instead."""
        ids = resolve_special_ids(tokenizer, special_ids)
        for role, fallbacks in FALLBACKS.items():  # e.g. GPT-2: <|endoftext|> is bos, eos and pad
            fallback = next((f for f in fallbacks if f in ids), None)
            if role not in ids and fallback is not None:
                ids[role] = ids[fallback]
                log.info("data: the tokenizer has no <%s>; using its <%s> (id %d)", role, fallback, ids[role])
        require_special_tokens(ids, ("cls", "sep", "pad"), "classification inputs ([cls] text [sep], padded)",
                               "use a tokenizer trained by lit-llm (tokenizer.kind=bpe|char) or pass "
                               "special_ids={'cls': ..., 'sep': ..., 'pad': ...}")
        self._use_tokenizer(tokenizer, tokenizer_fingerprint, ids)

    # -- 4. tokenize, cache -------------------------------------------------------------------
    def _cache_key(self) -> dict[str, Any]:
        key = {"data": self.data_fingerprint, "tokenizer": self.tokenizer_fingerprint, "max_length": self.max_length,
               "cls": self.special_ids["cls"], "sep": self.special_ids["sep"], "version": CLASSIFICATION_VERSION}
        if self.long_inputs != "truncate":  # truncate keeps its old keys: those caches stay valid
            key["long_inputs"] = self.long_inputs_settings()
        return key

    def long_inputs_settings(self) -> dict[str, Any]:
        """The long-input settings (cache key, state_dict); windowed_text only where it matters (windows of a
        pair), so the keys of caches made before it existed stay valid."""
        settings = {"long_inputs": self.long_inputs, "doc_stride": self.doc_stride, "max_windows": self.max_windows}
        if self.long_inputs == "windows" and self.text_pair_column is not None:
            settings["windowed_text"] = self.windowed_text
        return settings

    def _build_split(self, split: str, out_dir: Path) -> dict[str, Any]:
        """Encode `split` as [cls] text [sep] (text_pair [sep]), save it in `out_dir`; return its statistics."""
        t0 = time.perf_counter()
        ds = self.raw[split]
        pair = "text_pair" in ds.column_names
        windows = self.long_inputs == "windows"
        features = {"input_ids": datasets.List(datasets.Value("int32")), "label": datasets.Value("int64"),
                    "length": datasets.Value("int32"), "needed": datasets.Value("int32")}
        kwargs = {"tokenizer": self.tokenizer, "cls_id": self.special_ids["cls"], "sep_id": self.special_ids["sep"],
                  "max_length": self.max_length}
        if pair:
            features["token_type_ids"] = datasets.List(datasets.Value("int8"))
        if windows:
            self._check_windows(self.long_inputs, self.doc_stride, self.max_windows, self.max_length, pair,
                                _template(self.tokenizer, pair)[1], self.windowed_text)
            features.update(window_lengths=datasets.List(datasets.Value("int32")), dropped=datasets.Value("int32"))
            kwargs.update(doc_stride=self.doc_stride, max_windows=self.max_windows, windowed_text=self.windowed_text)
        fp = sha256_json([self.tokenized_dir.name, split, "needed"])[:32]
        mapped = ds.map(
            _encode_windows if windows else _encode_examples, batched=True, batch_size=1000,
            num_proc=self.num_proc if self.num_proc > 1 and len(ds) > 1 else None,
            remove_columns=ds.column_names, features=datasets.Features(features), fn_kwargs=kwargs,
            new_fingerprint=fp,  # given, so datasets does not hash the tokenizer
            desc=f"tokenizing {split}",
        )
        lengths = np.asarray(mapped["length"])
        stats = {"examples": len(mapped), "mean_tokens": round(float(lengths.mean()), 2),
                 "max_tokens": int(lengths.max()),
                 "per_class": np.bincount(np.asarray(mapped["label"]), minlength=len(self._names)).tolist()}
        if windows:  # "truncated": documents that lost text to data.max_windows
            counts = np.asarray([len(w) for w in mapped["window_lengths"]])
            stats.update(truncated=int(np.count_nonzero(mapped["dropped"])), windows=int(counts.sum()),
                         mean_windows=round(float(counts.mean()), 3), max_windows=int(counts.max()),
                         long_documents=int(np.count_nonzero(np.asarray(mapped["needed"]) > self.max_length)))
            mapped = mapped.remove_columns(["dropped"])
            log.info("data: %s: %d of %d documents longer than data.max_length=%d, cut into %d windows in all "
                     "(mean %.2f, max %d per document; data.doc_stride=%d); %d lost text to data.max_windows=%s",
                     split, stats["long_documents"], len(mapped), self.max_length, stats["windows"],
                     stats["mean_windows"], stats["max_windows"], self.doc_stride, stats["truncated"],
                     self.max_windows)
        else:
            stats["truncated"] = check_truncation(split, mapped["needed"], self.max_length, "data.max_length")
        truncated = stats["truncated"]
        mapped.remove_columns(["needed"]).save_to_disk(str(out_dir))
        log.info("data: tokenized %s: %d examples, %d tokens on average, %d (%.1f%%) truncated to data.max_length=%d "
                 "in %.1fs", split, len(mapped), stats["mean_tokens"], truncated, 100 * truncated / max(len(mapped), 1),
                 self.max_length, time.perf_counter() - t0)
        return stats

    # -- 5. loaders --------------------------------------------------------------------------
    @property
    def train_order(self) -> str:
        """The train sampler in use: data.sampler, or `bucket` when the older bucket_by_length=true is set."""
        return "bucket" if self.sampler == "random" and self.bucket_by_length else self.sampler

    def _new_train_sampler(self, num_replicas: int, rank: int) -> ResumableRandomSampler:
        if self.train_order == "balanced":
            return BalancedRandomSampler(self.opened_split("train").labels, self.shuffle_seed,
                                         num_replicas=num_replicas, rank=rank)
        return super()._new_train_sampler(num_replicas, rank)  # bucket or random (ExampleLoadersMixin)

    def collator(self):
        """`pad_collate`, or with data.long_inputs=windows `WindowCollator` (one row per window + window_doc)."""
        return (WindowCollator if self.long_inputs == "windows" else pad_collate)(self.special_ids["pad"])

    def state_dict(self) -> dict[str, Any]:
        return {"data_fingerprint": self.data_fingerprint, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "max_length": self.max_length, "batch_size": self.batch_size, "shuffle_seed": self.shuffle_seed,
                "bucket_by_length": self.train_order == "bucket", "sampler": self.train_order,
                **self.long_inputs_settings()}


def _concat(tables: list[pa.Table]) -> datasets.Dataset:
    return datasets.Dataset(datasets.table.InMemoryTable(pa.concat_tables(tables).combine_chunks()))


def _unlabelled(table: pa.Table) -> bool:
    labels = table.column("label")
    return pa.types.is_integer(labels.type) and bool(pc.all(pc.equal(labels, -1)).as_py())


__all__ = [
    "ClassificationDataModule", "BucketRandomSampler", "BalancedRandomSampler", "TokenizedExamples", "read_label_names", "label_key",
    "CLASSIFICATION_VERSION",
]
