"""A tokenized corpus on disk: one token stream in a flat file, its packed blocks a memory-mapped view.

Nothing here holds O(corpus) in memory, when writing or reading:

- `write_token_stream(ds, tokenizer, eos_id, out_dir)` tokenizes the `text` column of a `datasets.Dataset` in
  batches (`Tokenizer.encode_batch`), `eos_id` after every document, and appends the ids to
  `out_dir/tokens.bin`; with `num_proc > 1`, contiguous shards of the documents are tokenized by worker
  processes into part files that are then appended in order (the same bytes as one process writes).
- `open_blocks(out_dir, block_size)` opens the stream with `np.memmap` and returns `TokenBlocks`, whose
  row i is stream[i*B : i*B + B + 1] (`pack_blocks` in `data/corpus.py`, without the copy):
  `np.lib.stride_tricks.as_strided` with row stride B tokens, so consecutive rows share one token.

File format (`TOKENS_FILE`, `META_FILE`): `tokens.bin` is the raw little-endian stream, `uint16` when every id
fits (the tokenizer's vocabulary, added tokens included, has at most 65,536 entries), else `uint32`;
`tokens.json` says `{"dtype": "uint16", "tokens": n, "documents": d}`. Both live in the cache entry's directory
(`TokenizedSplitsMixin` writes it to a temporary name and renames it when complete).
"""
from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import datasets
import numpy as np
from tokenizers import Tokenizer

TOKENS_FILE = "tokens.bin"
META_FILE = "tokens.json"
UINT16_VOCAB = 1 << 16  # ids 0..65535
BATCH_DOCUMENTS = 1000  # documents per encode_batch call


def stream_dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 when every id of a `vocab_size` vocabulary fits (<= 65,536 ids), else uint32."""
    return np.dtype("<u2") if vocab_size <= UINT16_VOCAB else np.dtype("<u4")


def encode_documents(tokenizer: Tokenizer, texts: list[str], eos_id: int, dtype: np.dtype) -> np.ndarray:
    """The token ids of `texts`, each document followed by `eos_id`, as one 1-D array of `dtype`."""
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    count = sum(len(e.ids) for e in encodings) + len(encodings)
    ids = itertools.chain.from_iterable(itertools.chain(e.ids, (eos_id,)) for e in encodings)
    return np.fromiter(ids, dtype=dtype, count=count)  # an id that does not fit raises OverflowError


def _text_batches(ds: datasets.Dataset, batch_size: int) -> Iterator[list[str]]:
    for batch in ds.select_columns(["text"]).iter(batch_size=batch_size):
        yield batch["text"]


def _append(path: Path, batches: Iterable[list[str]], tokenizer: Tokenizer, eos_id: int, dtype: np.dtype) -> int:
    """Append the tokens of `batches` to `path`; return how many were written."""
    tokens = 0
    with open(path, "ab") as f:
        for texts in batches:
            ids = encode_documents(tokenizer, texts, eos_id, dtype)
            ids.tofile(f)
            tokens += len(ids)
    return tokens


def _write_shard(ds: datasets.Dataset, num_shards: int, index: int, path: str, tokenizer: Tokenizer,
                 eos_id: int, dtype: str, batch_size: int) -> int:
    """Worker process: the tokens of one contiguous shard of `ds` into its own part file."""
    shard = ds.shard(num_shards=num_shards, index=index, contiguous=True)
    return _append(Path(path), _text_batches(shard, batch_size), tokenizer, eos_id, np.dtype(dtype))


def write_token_stream(ds: datasets.Dataset, tokenizer: Tokenizer, eos_id: int, out_dir: str | os.PathLike,
                       num_proc: int = 1, batch_size: int = BATCH_DOCUMENTS) -> dict[str, int | str]:
    """Tokenize every document of `ds` into `out_dir/tokens.bin` (+ `tokens.json`); return
    {"documents", "tokens", "dtype"}. Memory: one batch of `batch_size` documents per process."""
    out = Path(out_dir)
    path = out / TOKENS_FILE
    dtype = stream_dtype(tokenizer.get_vocab_size(with_added_tokens=True))
    path.write_bytes(b"")
    num_proc = max(1, min(int(num_proc or 1), len(ds)))
    if num_proc == 1:
        tokens = _append(path, _text_batches(ds, batch_size), tokenizer, eos_id, dtype)
    else:
        parts = [out / f"{TOKENS_FILE}.part{i}" for i in range(num_proc)]
        with ProcessPoolExecutor(num_proc, mp_context=multiprocessing.get_context()) as pool:
            counts = list(pool.map(_write_shard, itertools.repeat(ds), itertools.repeat(num_proc), range(num_proc),
                                   map(str, parts), itertools.repeat(tokenizer), itertools.repeat(eos_id),
                                   itertools.repeat(dtype.str), itertools.repeat(batch_size)))
        with open(path, "ab") as f:  # the shards in order: the stream one process would have written
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, f, 16 << 20)
                part.unlink()
        tokens = sum(counts)
    meta = {"dtype": dtype.name, "tokens": int(tokens), "documents": len(ds)}
    (out / META_FILE).write_text(json.dumps(meta) + "\n")
    return meta


def num_blocks(tokens: int, block_size: int) -> int:
    """How many blocks of `block_size + 1` tokens with stride `block_size` a stream of `tokens` holds."""
    return max(0, (tokens - 1) // block_size)


class TokenBlocks:
    """The packed blocks [n, block_size + 1] of a token file, read through `np.memmap`.

    Indexing (`blocks[i]`, `blocks[[3, 1]]`, `blocks[:, 1:]`) and `np.asarray(blocks)` work as on the
    array `array` (a read-only strided view: nothing is read until used). It pickles as its file name
    and shape, so a DataLoader worker started by spawn or forkserver opens the file itself, on first
    access, instead of receiving a copy of the whole corpus.
    """

    def __init__(self, path: str | os.PathLike, dtype: str | np.dtype, tokens: int, block_size: int):
        self.path = os.fspath(path)
        self.dtype = np.dtype(dtype)
        self.tokens = int(tokens)
        self.block_size = int(block_size)
        self.shape = (num_blocks(self.tokens, self.block_size), self.block_size + 1)
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            size = os.path.getsize(self.path)
            if size != self.tokens * self.dtype.itemsize:
                raise OSError(f"{self.path}: {size} bytes where {self.tokens} {self.dtype.name} tokens were written; "
                              "the cache entry is damaged: delete its directory and run again")
            if self.shape[0] == 0:
                self._array = np.empty(self.shape, dtype=self.dtype)
            else:
                stream = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.tokens,))
                step = self.dtype.itemsize
                self._array = np.lib.stride_tricks.as_strided(
                    stream, shape=self.shape, strides=(self.block_size * step, step), writeable=False)
        return self._array

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        return self.array[index]

    def __array__(self, dtype=None, copy=None):
        return np.array(self.array, dtype=dtype) if copy else np.asarray(self.array, dtype=dtype)

    def __reduce__(self):  # never pickle the mapped data
        return type(self), (self.path, self.dtype.str, self.tokens, self.block_size)

    def __repr__(self) -> str:
        return f"TokenBlocks({self.path!r}, {self.dtype.name}, shape={self.shape})"


def open_blocks(out_dir: str | os.PathLike, block_size: int) -> TokenBlocks:
    """The blocks of the token stream that `write_token_stream` wrote into `out_dir`."""
    meta = json.loads((Path(out_dir) / META_FILE).read_text())
    return TokenBlocks(Path(out_dir) / TOKENS_FILE, meta["dtype"], meta["tokens"], block_size)


__all__ = ["TOKENS_FILE", "META_FILE", "stream_dtype", "encode_documents", "write_token_stream", "num_blocks",
           "TokenBlocks", "open_blocks"]
