"""Streaming pretraining data (`data.streaming=true`): documents read lazily, tokenized and packed on the fly.

- `load_text_streams(...)`: the splits of text files or a hub dataset as `datasets.IterableDataset`s
  (`load_dataset(..., streaming=True)`), each with one `text` column and no empty rows, as
  `sources.load_text_dataset` gives them in memory, and a fingerprint (file contents, or the hub name).
- `PackedStream`: a torch IterableDataset of blocks of `block_size + 1` tokens, packed exactly as
  `data/corpus.py` packs a cached split (one stream of documents, `<eos>` after each, stride `block_size`),
  drawn from an IterableDataset of documents, endlessly: when the source ends, the next pass starts.

Resuming: a position in the stream is a global block count g (blocks 0..g-1 done) and its snapshot,
`{"blocks": g, "pass": p, "source": <the source's IterableDataset.state_dict()>, "buffer": [token ids read but
not yet packed], "skip": <tokens of the next documents that belong to blocks before g>}` (plain Python types);
restoring one loads the source state (`IterableDataset.load_state_dict`, datasets >= 2.18), refills the buffer
and continues with block g. The stream remembers its recent refills, from which it derives the position before
any block of the last `window` it produced (or ahead of them), so the data module saves the position the trainer
has CONSUMED (its global step), not the one the loader has prefetched. Every `iter()` starts at the position
`position()` returns (the trainer's): a remembered one, the checkpoint's, or, without either, the beginning read
forward to it (exact, only slower).

Under DDP every rank reads and packs the whole stream and keeps blocks rank, rank + W, rank + 2W, ...: all ranks
share one position, so rank 0's checkpoint resumes them all (tokenizing is a small share of a training step).
The source is read in order: a shuffle buffer's content would be lost at a resume (the datasets docs say so).
"""
from __future__ import annotations

import collections
import logging
from typing import Any, Callable, Iterator, Mapping

import datasets
import numpy as np
import torch
from tokenizers import Tokenizer

from lit_llm.data.base import require_choice, require_one_source
from lit_llm.data.sources import (
    SAMPLE_BY,
    SOURCES_VERSION,
    _builder_for,
    _format_groups,
    _split_specs,
    hub_reachable,
    nonempty_rows,
    resolve_files,
)
from lit_llm.data.token_stream import encode_documents, stream_dtype
from lit_llm.errors import ConfigError
from lit_llm.utils_io import sha256_file, sha256_json

log = logging.getLogger("lit_llm")

REFILL_DOCUMENTS = 64  # documents tokenized at a time (one encode_batch); the buffer a snapshot may carry


# ----------------------------------------------------------------------------- sources

def _clean_stream(ds: datasets.IterableDataset, text_column: str, where: str) -> datasets.IterableDataset:
    """Only `text_column` (renamed `text`), without empty or whitespace rows (lazily)."""
    names = ds.column_names  # None when the format does not say before reading (json)
    if names is not None and text_column not in names:
        raise ConfigError(f"data.text_column={text_column!r} is not a column of {where}; its columns are {names}; "
                          "set data.text_column=<one of them>.")
    ds = ds.select_columns([text_column])
    if text_column != "text":
        ds = ds.rename_column(text_column, "text")
    return ds.filter(nonempty_rows, batched=True)


def load_text_streams(
    files: Any = None, hub_name: str | None = None, hub_config: str | None = None, text_column: str = "text",
    sample_by: str = "line", eval_files: Mapping[str, Any] | None = None,
) -> tuple[dict[str, datasets.IterableDataset], str]:
    """The splits of `files` ({split: spec} or one spec for "train") or of the hub dataset `hub_name`, plus the
    `eval_files` corpora as splits "eval_<name>", each an IterableDataset of `text`; and a fingerprint: the
    files' contents and loading options, or for a hub dataset its name and config (its content is not read)."""
    require_choice("data.sample_by", sample_by, SAMPLE_BY)
    require_one_source(files, hub_name)
    streams: dict[str, datasets.IterableDataset] = {}
    layout: dict[str, Any] = {}
    if hub_name is not None:
        if not hub_reachable():
            raise ConfigError(f"data.hub_name={hub_name!r} with data.streaming=true reads the dataset from the hub, "
                              "which is unreachable from here; set data.streaming=false to use a locally cached copy, "
                              "or data.files=<local files>.")
        try:
            source = datasets.load_dataset(hub_name, hub_config, streaming=True)
        except Exception as e:
            raise ConfigError(f"data.hub_name={hub_name!r} (data.hub_config={hub_config!r}) could not be streamed: "
                              f"{type(e).__name__}: {str(e)[:300]}; check the name/config.") from e
        if isinstance(source, datasets.IterableDataset):
            source = {"train": source}
        for split, ds in source.items():
            streams[split] = _clean_stream(ds, text_column, f"data.hub_name={hub_name!r} split {split!r}")
            layout[split] = {"hub": hub_name, "config": hub_config}
    for split, (spec, key) in _split_specs(None if hub_name is not None else files, eval_files).items():
        parts, part_layout = [], []
        for paths in _format_groups(resolve_files(spec, key), key):
            _, builder, kwargs = _builder_for(paths, key)
            if builder == "text":
                kwargs["sample_by"] = sample_by
            ds = datasets.load_dataset(builder, data_files={split: paths}, split=split, streaming=True, **kwargs)
            where = f"{key} ({', '.join(paths[:3])}{', ...' if len(paths) > 3 else ''})"
            parts.append(_clean_stream(ds, "text" if builder == "text" else text_column, where))
            part_layout.append({"files": [sha256_file(p) for p in paths], "loader": builder + repr(sorted(kwargs.items()))})
        streams[split] = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
        layout[split] = part_layout[0] if len(part_layout) == 1 else part_layout
    fingerprint = sha256_json({"version": SOURCES_VERSION, "streaming": True, "splits": layout,
                               "text_column": text_column, "sample_by": sample_by})
    return streams, fingerprint


def materialize(stream: datasets.IterableDataset, limit: int | None = None) -> datasets.Dataset:
    """The first `limit` documents (all with None) of a stream as an in-memory Dataset (evaluation splits)."""
    rows = stream if limit is None else stream.take(limit)
    return datasets.Dataset.from_dict({"text": [row["text"] for row in rows]})


# ----------------------------------------------------------------------------- packing on the fly

class PackedStream(torch.utils.data.IterableDataset):
    """Blocks [block_size + 1] (numpy, the stream's dtype) packed on the fly from `source` (see the module
    docstring). `position()`: the global block count the consumer has done (None: where the last iteration
    stopped); `start`: a snapshot from a checkpoint (`state_at`); `window`: how many blocks behind the newest
    one the stream can still give the position of (the consumer's lag: prefetched batches, other ranks' blocks).

    Snapshots are taken when the stream starts, at every refill (REFILL_DOCUMENTS documents tokenized) and when a
    pass starts: (g, pass, source state, buffer, offset, skip): buffer[offset:] are the tokens read and not yet
    packed before block g, and `skip` tokens still to drop from those read next (a start reached by reading
    forward). The position before any later block t derives from the latest snapshot at or before it: its tokens
    from offset + (t - g) * block_size on, or, when that is past the buffer's end, none and that many more to skip.
    """

    def __init__(self, source: datasets.IterableDataset, tokenizer: Tokenizer, eos_id: int, block_size: int,
                 rank: int = 0, world_size: int = 1, position: Callable[[], int | None] | None = None,
                 start: Mapping[str, Any] | None = None, window: int = 4096):
        self.source, self.tokenizer, self.eos_id, self.block_size = source, tokenizer, int(eos_id), int(block_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.position = position
        self.start = dict(start) if start else None
        self.window = int(window)
        self.dtype = stream_dtype(tokenizer.get_vocab_size(with_added_tokens=True))
        self.produced = int(self.start["blocks"]) if self.start else 0  # the live position (global blocks done)
        self._snapshots: collections.deque = collections.deque()  # (g, pass, source state, buffer, offset, skip)

    # -- positions
    def state_at(self, blocks: int) -> dict[str, Any] | None:
        """The position before global block `blocks` in plain Python types (for a checkpoint), or None when
        the stream no longer knows it (more than `window` blocks back)."""
        base = next((snap for snap in reversed(self._snapshots) if snap[0] <= blocks), None)
        if base is not None:
            g, pass_, source, buf, off, skip = base
            off += (blocks - g) * self.block_size
            return {"blocks": blocks, "pass": pass_, "source": source, "buffer": buf[off:].tolist(),
                    "skip": skip + max(0, off - len(buf))}
        if self.start is not None and self.start["blocks"] == blocks:
            return dict(self.start)
        return None

    def _start_at(self, target: int) -> dict[str, Any]:
        """Where an iteration that begins with block `target` starts: a live position, the checkpoint's, or the
        beginning of the stream with everything before `target` to skip."""
        live = self.state_at(target)
        if live is not None:
            return live
        if self.start is not None and self.start["blocks"] <= target:
            base, known = self.start, "the checkpoint's"
        else:
            base, known = {"blocks": 0, "pass": 0, "source": None, "buffer": [], "skip": 0}, "the start"
        if target > base["blocks"]:
            log.info("data: streaming: reading forward from %s position (block %d) to block %d", known,
                     base["blocks"], target)
        tokens = np.asarray(base["buffer"], dtype=np.int64)
        off = (target - base["blocks"]) * self.block_size
        return {**base, "blocks": target, "buffer": tokens[off:], "skip": base.get("skip", 0) + max(0, off - len(tokens))}

    def _remember(self, snapshot: tuple) -> None:
        self._snapshots.append(snapshot)
        oldest_needed = self.produced - self.window
        while len(self._snapshots) > 1 and self._snapshots[1][0] <= oldest_needed:
            self._snapshots.popleft()

    # -- iteration
    def __iter__(self) -> Iterator[np.ndarray]:
        target = self.position() if self.position is not None else None
        return self._blocks(self._start_at(self.produced if target is None else target))

    def _documents(self, pass_: int, source_state: dict | None) -> Iterator[dict]:
        self.source.set_epoch(pass_)
        self.source.load_state_dict(source_state)  # None: from the beginning of the pass
        return iter(self.source)

    def _blocks(self, start: Mapping[str, Any]) -> Iterator[np.ndarray]:
        B, W = self.block_size, self.world_size
        g, pass_, source_state, skip = int(start["blocks"]), int(start["pass"]), start["source"], int(start["skip"])
        buf, off = np.asarray(start["buffer"], dtype=self.dtype), 0
        docs = self._documents(pass_, source_state)
        read_in_pass = source_state is not None
        self._snapshots.clear()
        self._remember((g, pass_, source_state, buf, off, skip))
        while True:
            while len(buf) - off >= B + 1:
                block = buf[off : off + B + 1]
                off, g = off + B, g + 1
                if (g - 1) % W == self.rank:
                    self.produced = g
                    yield block
            texts = [row["text"] for _, row in zip(range(REFILL_DOCUMENTS), docs)]
            if not texts:  # the source ended: the next pass continues the token stream
                if not read_in_pass:
                    raise ConfigError("the training stream has no documents (data.files / data.hub_name with "
                                      "data.streaming=true); check the source and data.val_documents.")
                pass_, source_state, read_in_pass = pass_ + 1, None, False
                log.info("data: streaming: the training source ended; pass %d starts", pass_ + 1)
                docs = self._documents(pass_, None)
            else:
                read_in_pass = True
                source_state = self.source.state_dict()  # after the documents just read
                ids = encode_documents(self.tokenizer, texts, self.eos_id, self.dtype)
                dropped, skip = min(skip, len(ids)), skip - min(skip, len(ids))
                buf, off = np.concatenate([buf[off:], ids[dropped:]]), 0
            self._remember((g, pass_, source_state, buf, off, skip))


__all__ = ["load_text_streams", "materialize", "PackedStream", "REFILL_DOCUMENTS"]
