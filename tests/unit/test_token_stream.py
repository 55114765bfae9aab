"""Corpora larger than memory: token files with memory-mapped blocks, and streaming with exact resumes."""
from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lit_llm.data.corpus import BlockDataset, CorpusDataModule, collate_blocks, pack_blocks
from lit_llm.data.streaming import PackedStream
from lit_llm.data.token_stream import (
    META_FILE,
    TOKENS_FILE,
    TokenBlocks,
    open_blocks,
    stream_dtype,
    write_token_stream,
)
from lit_llm.errors import ConfigError
from lit_llm.tokenization import train_char

datasets.disable_progress_bars()

DOCS = [f"story {i}: the fox{' jumped' * (i % 7)} over the dog{'!' * (i % 3)}" for i in range(120)]


def write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def tokenizer_for(texts):
    return train_char(texts)


def stream_of(tokenizer, docs: list[str]) -> np.ndarray:
    """The reference token stream: every document's ids, <eos> after each (what packing cuts)."""
    eos = tokenizer.token_to_id("<eos>")
    return np.array([t for d in docs for t in tokenizer.encode(d).ids + [eos]], dtype=np.int64)


def corpus_dm(tmp_path: Path, **kw) -> CorpusDataModule:
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    kw.setdefault("block_size", 16)
    kw.setdefault("batch_size", 4)
    tmp_path.mkdir(parents=True, exist_ok=True)
    files = kw.pop("files", None) or write(tmp_path / "c.txt", DOCS)
    dm = CorpusDataModule(files=files, **kw)
    dm.load_raw()
    dm.set_tokenizer(tokenizer_for(DOCS))
    return dm


# ============================================================================ token files

@pytest.mark.parametrize("num_proc", [1, 2])
def test_cached_blocks_equal_pack_blocks_of_the_stream(tmp_path, num_proc):
    dm = corpus_dm(tmp_path, files={"train": write(tmp_path / "t.txt", DOCS[:100]),
                                    "validation": write(tmp_path / "v.txt", DOCS[100:])}, num_proc=num_proc)
    dm.setup()
    for split, docs in (("train", DOCS[:100]), ("validation", DOCS[100:])):
        expected = pack_blocks(stream_of(dm.tokenizer, docs), 16)
        blocks = dm.blocks[split]
        assert blocks.dtype == np.uint16 and blocks.shape == expected.shape
        assert np.array_equal(blocks, expected)
        assert dm.stats[split] == {"documents": len(docs), "tokens": len(stream_of(dm.tokenizer, docs)),
                                   "blocks": len(expected), "dtype": "uint16"}
        entry = dm.tokenized_dir / split
        assert (entry / TOKENS_FILE).stat().st_size == 2 * dm.stats[split]["tokens"]
        assert (entry / META_FILE).is_file() and not list(entry.glob("*.part*"))
    # the blocks are a read-only view of the mapped file, not a copy
    assert not dm.blocks["train"].flags.owndata and not dm.blocks["train"].flags.writeable


def test_dtype_follows_the_vocabulary_size(tmp_path):
    assert stream_dtype(65_536) == np.uint16 and stream_dtype(65_537) == np.uint32
    tok = train_char(["hello world"])
    tok.add_tokens([f"<x{i}>" for i in range(66_000)])  # ids up to ~66,000: no longer fit in uint16
    ds = datasets.Dataset.from_dict({"text": ["hello <x65990> world", "hello"] * 5})
    meta = write_token_stream(ds, tok, eos_id=1, out_dir=tmp_path)
    assert meta["dtype"] == "uint32"
    blocks = open_blocks(tmp_path, 4)
    expected = [t for text in ds["text"] for t in tok.encode(text, add_special_tokens=False).ids + [1]]
    assert np.array_equal(blocks[:], pack_blocks(np.array(expected), 4)) and blocks[0].dtype == np.uint32
    assert max(expected) > 65_535


def test_token_blocks_pickle_as_a_file_name_and_work_in_workers(tmp_path):
    """A worker started by spawn or forkserver receives the dataset pickled: a file name that it opens on
    first access (the round trip below); forked workers share the parent's mapping."""
    dm = corpus_dm(tmp_path)
    dm.setup()
    blocks = dm.opened["train"]
    assert isinstance(blocks, TokenBlocks) and len(pickle.dumps(BlockDataset(blocks))) < 500
    again = pickle.loads(pickle.dumps(blocks))
    assert again._array is None  # opened lazily
    assert np.array_equal(again[:], blocks[:]) and again.shape == blocks.shape
    ds = BlockDataset(blocks)
    order = list(range(len(blocks)))[::-1]
    serial = list(DataLoader(ds, batch_size=4, sampler=order, collate_fn=collate_blocks))
    workers = list(DataLoader(ds, batch_size=4, sampler=order, collate_fn=collate_blocks, num_workers=2))
    assert len(serial) == len(workers) > 0
    assert all(torch.equal(a[k], b[k]) for a, b in zip(serial, workers) for k in a)
    assert serial[0]["input_ids"].dtype == torch.int64


def test_a_truncated_token_file_is_reported(tmp_path):
    ds = datasets.Dataset.from_dict({"text": DOCS[:10]})
    write_token_stream(ds, tokenizer_for(DOCS), eos_id=2, out_dir=tmp_path)
    path = tmp_path / TOKENS_FILE
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(OSError, match="damaged"):
        open_blocks(tmp_path, 8)[0]


# ============================================================================ streaming

def text_stream(path: str) -> datasets.IterableDataset:
    return datasets.load_dataset("text", data_files={"train": path}, split="train", streaming=True)


def take(loader_or_stream, n: int) -> list[np.ndarray]:
    out = []
    for item in loader_or_stream:
        out.append(item["input_ids"].numpy() if isinstance(item, dict) else np.asarray(item))
        if len(out) == n:
            break
    return out


def test_packed_stream_is_pack_blocks_of_the_documents_pass_after_pass(tmp_path):
    tok = tokenizer_for(DOCS)
    eos = tok.token_to_id("<eos>")
    stream = PackedStream(text_stream(write(tmp_path / "c.txt", DOCS)), tok, eos, block_size=16)
    one_pass = stream_of(tok, DOCS)
    expected = pack_blocks(np.concatenate([one_pass] * 3), 16)  # the next pass continues the token stream
    got = take(stream, 2 * len(pack_blocks(one_pass, 16)) + 5)
    assert np.array_equal(np.stack(got), expected[: len(got)])


def test_ranks_take_interleaved_blocks_of_one_stream(tmp_path):
    tok = tokenizer_for(DOCS)
    path = write(tmp_path / "c.txt", DOCS)
    every = take(PackedStream(text_stream(path), tok, 2, 16), 40)
    ranks = [take(PackedStream(text_stream(path), tok, 2, 16, rank=r, world_size=2), 20) for r in (0, 1)]
    assert np.array_equal(np.stack(ranks[0]), np.stack(every[0::2]))
    assert np.array_equal(np.stack(ranks[1]), np.stack(every[1::2]))


def test_positions_ahead_of_the_reading_resume_exactly(tmp_path):
    """A position past the tokens read so far (rank 0 of 2 has not read rank 1's next block; a checkpoint's
    position read forward to) is the source state plus tokens to skip; resuming from it, and again from a
    position of the resumed stream, gives the uninterrupted blocks."""
    tok = tokenizer_for(DOCS)
    path = write(tmp_path / "c.txt", DOCS)
    every = take(PackedStream(text_stream(path), tok, 2, 16), 300)
    rank0 = PackedStream(text_stream(path), tok, 2, 16, rank=0, world_size=2)
    take(rank0, 10)  # global blocks 0, 2, ..., 18 read
    ahead = pickle.loads(pickle.dumps(rank0.state_at(20)))
    assert np.array_equal(np.stack(take(PackedStream(text_stream(path), tok, 2, 16, start=ahead), 5)),
                          np.stack(every[20:25]))
    far = rank0.state_at(250)  # far past the buffer: everything from there is skipped tokens
    assert far["buffer"] == [] and far["skip"] > 0
    resumed = PackedStream(text_stream(path), tok, 2, 16, start=far)
    assert np.array_equal(np.stack(take(resumed, 10)), np.stack(every[250:260]))
    again = PackedStream(text_stream(path), tok, 2, 16, start=resumed.state_at(262))
    assert np.array_equal(np.stack(take(again, 10)), np.stack(every[262:272]))


def stream_dm(tmp_path: Path, **kw) -> CorpusDataModule:
    kw.setdefault("val_documents", 10)
    dm = corpus_dm(tmp_path, streaming=True, **kw)
    dm.setup()
    return dm


@pytest.mark.parametrize("cut", [1, 3, 17, 95])  # 95 batches: into the second pass (~92 in one)
def test_streaming_resume_continues_at_the_same_block(tmp_path, cut):
    uninterrupted = take(stream_dm(tmp_path).train_dataloader(), cut + 8)
    first = stream_dm(tmp_path)
    take(first.train_dataloader(), cut)
    state = pickle.loads(pickle.dumps(first.state_dict()))  # plain Python types, as in a checkpoint
    assert state["stream"]["blocks"] == 4 * cut and state["stream"]["pass"] == (cut == 95)
    resumed = stream_dm(tmp_path)
    resumed.load_state_dict(state)
    after = take(resumed.train_dataloader(), 8)
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted[cut:], after))


def test_streaming_saves_the_consumed_position_not_the_prefetched_one(tmp_path):
    """With a trainer attached, the position is its global step's (Lightning fetches one batch ahead), and a
    new iteration (a new epoch, a resume) starts there."""
    dm = stream_dm(tmp_path)
    trainer = SimpleNamespace(global_step=0, accumulate_grad_batches=2, world_size=1, global_rank=0)
    dm.trainer = trainer
    uninterrupted = take(stream_dm(tmp_path).train_dataloader(), 12)
    loader = dm.train_dataloader()
    got = take(loader, 7)  # 3 optimizer steps of 2 batches, and one batch prefetched
    trainer.global_step = 3
    assert dm.state_dict()["stream"]["blocks"] == 3 * 2 * 4
    again = take(loader, 6)  # a new iteration starts at the trainer's position
    assert all(np.array_equal(a, b) for a, b in zip(got + again, uninterrupted[:7] + uninterrupted[6:]))
    # a checkpoint without the stream's position (or from before it was saved) reads forward to it
    resumed = stream_dm(tmp_path)
    resumed.trainer = trainer
    assert all(np.array_equal(a, b) for a, b in zip(take(resumed.train_dataloader(), 6), uninterrupted[6:]))


def test_streaming_validation_is_the_first_documents_and_training_skips_them(tmp_path):
    dm = stream_dm(tmp_path, val_documents=10)
    assert list(dm.raw) == ["validation"] and list(dm.raw["validation"]["text"]) == DOCS[:10]
    assert dm.test_split_names() == ["validation"] and dm.stats["validation"]["documents"] == 10
    training = np.stack(take(dm.train_dataloader(), 3)).reshape(-1, 16)
    expected = pack_blocks(stream_of(dm.tokenizer, DOCS[10:]), 16)[:12, :-1]
    assert np.array_equal(training, expected)
    other = stream_dm(tmp_path / "b", val_documents=20)
    assert other.data_fingerprint != dm.data_fingerprint
    # a source validation split is used instead (its first val_documents documents)
    split = stream_dm(tmp_path / "c", files={"train": write(tmp_path / "t.txt", DOCS[:60]),
                                             "validation": write(tmp_path / "v.txt", DOCS[60:])}, val_documents=5)
    assert list(split.raw["validation"]["text"]) == DOCS[60:65]
    assert np.array_equal(np.stack(take(split.train_dataloader(), 1))[0],
                          pack_blocks(stream_of(split.tokenizer, DOCS[:60]), 16)[:4, :-1])


def test_streaming_reads_structured_files_and_checks_its_settings(tmp_path):
    import json

    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(DOCS)))
    dm = stream_dm(tmp_path, files=str(jsonl), text_column="body", val_documents=5)
    assert list(dm.raw["validation"]["text"]) == DOCS[:5]
    assert np.array_equal(np.stack(take(dm.train_dataloader(), 1))[0],
                          pack_blocks(stream_of(dm.tokenizer, DOCS[5:]), 16)[:4, :-1])
    with pytest.raises(ConfigError, match=r"data\.holdout=tail"):
        CorpusDataModule(files=str(jsonl), streaming=True, holdout="tail")
    with pytest.raises(ConfigError, match=r"data\.val_documents=0"):
        CorpusDataModule(files=str(jsonl), streaming=True, val_documents=0)
    with pytest.raises(ConfigError, match="no documents"):
        take(stream_dm(tmp_path / "e", files=write(tmp_path / "few.txt", DOCS[:3]), val_documents=3)
             .train_dataloader(), 1)
