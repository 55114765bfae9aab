"""Data: atomic writes, text sources, splits, packing, the tokenized cache, resumable shuffling."""
from __future__ import annotations

import glob
import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch

from lit_llm.data import corpus as corpus_mod
from lit_llm.data import sources
from lit_llm.data.corpus import (
    CorpusDataModule,
    collate_blocks,
    pack_blocks,
)
from lit_llm.data.loading import ResumableRandomSampler
from lit_llm.data.sources import hub_offline_mode, load_text_dataset
from lit_llm.errors import ConfigError
from lit_llm.tokenization import token_id, train_char
from lit_llm.utils_io import (
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    sha256_files,
    sha256_text,
)

datasets.disable_progress_bars()

DOCS = [
    "First document about cats.",
    "Second document, about dogs and cats.",
    "Third one: birds!",
    "Fourth: fish swim in the sea.",
    "Fifth and last document here.",
]


def shared_data_dir() -> Path | None:
    env = os.environ.get("LIT_LLM_DATA_DIR")
    candidate = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def texts(ds) -> list[str]:
    return list(ds["text"])


# ============================================================================ utils_io

def test_atomic_writes(tmp_path):
    p = atomic_write_text(tmp_path / "sub" / "a.txt", "héllo")
    assert p.read_text(encoding="utf-8") == "héllo"
    atomic_write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"b": 1, "a": [1, 2]}
    atomic_write_text(tmp_path / "sub" / "a.txt", "replaced")
    assert p.read_text() == "replaced"
    assert sorted(os.listdir(tmp_path / "sub")) == ["a.txt"]  # no temporary files left


def test_atomic_dir_success_failure_and_lost_race(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and ".tmp-" in tmp.name and tmp.is_dir()
        (tmp / "f").write_text("1")
    assert (final / "f").read_text() == "1"

    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "broken") as tmp:
            (tmp / "f").write_text("partial")
            raise RuntimeError("killed")
    assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing that looks like a result

    with atomic_dir(final) as tmp:  # a concurrent writer already produced `final`
        (tmp / "f").write_text("2")
    assert (final / "f").read_text() == "1" and sorted(os.listdir(tmp_path)) == ["out"]


def test_hashes_are_content_based(tmp_path):
    a = write(tmp_path / "a.txt", "same")
    b = write(tmp_path / "other_name.txt", "same")
    c = write(tmp_path / "c.txt", "different")
    assert sha256_files([a]) == sha256_files([b]) != sha256_files([c])
    x, y = write(tmp_path / "x", "ab"), write(tmp_path / "y", "c")
    u, v = write(tmp_path / "u", "a"), write(tmp_path / "v", "bc")
    assert sha256_files([x, y]) != sha256_files([u, v])
    assert sha256_text("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ============================================================================ sources

def test_txt_line_paragraph_document(tmp_path):
    path = write(tmp_path / "a.txt", "one\ntwo\n\n   \nthree\nfour\n\nfive")
    lines, _ = load_text_dataset(files=path, sample_by="line", cache_dir=tmp_path)
    assert texts(lines["train"]) == ["one", "two", "three", "four", "five"]  # blank lines dropped
    paras, _ = load_text_dataset(files=path, sample_by="paragraph", cache_dir=tmp_path)
    assert [t.strip() for t in texts(paras["train"])] == ["one\ntwo", "three\nfour", "five"]
    doc, _ = load_text_dataset(files=path, sample_by="document", cache_dir=tmp_path)
    assert texts(doc["train"]) == [Path(path).read_text()]
    assert list(lines) == ["train"] and lines["train"].column_names == ["text"]
    assert (tmp_path / "hf_datasets").is_dir()  # datasets' own cache lives under cache_dir


def test_structured_formats_with_text_column(tmp_path):
    rows = [{"id": i, "body": d} for i, d in enumerate(DOCS)] + [{"id": 99, "body": "  "}]
    jsonl = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    csv = write(tmp_path / "d.csv", "id,body\n" + "".join(f'{r["id"]},"{r["body"]}"\n' for r in rows))
    tsv = write(tmp_path / "d.tsv", "id\tbody\n" + "".join(f'{r["id"]}\t{r["body"]}\n' for r in rows))
    parquet = str(tmp_path / "d.parquet")
    datasets.Dataset.from_list(rows).to_parquet(parquet)
    for path in (jsonl, csv, tsv, parquet):
        dsd, _ = load_text_dataset(files=path, text_column="body", cache_dir=tmp_path)
        assert dsd["train"].column_names == ["text"], path
        assert texts(dsd["train"]) == DOCS, path  # whitespace-only row dropped


def test_tsv_keeps_bare_quotes(tmp_path):
    path = write(tmp_path / "q.tsv", 'sentence\tlabel\n"quoted start\t1\nplain\t0\n')
    dsd, _ = load_text_dataset(files=path, text_column="sentence", cache_dir=tmp_path)
    assert texts(dsd["train"]) == ['"quoted start', "plain"]


def test_globs_lists_dicts_and_eval_files(tmp_path):
    for i, d in enumerate(DOCS):
        write(tmp_path / "corpus" / f"part{i}.txt", d + "\n")
    write(tmp_path / "val.txt", "validation text\n")
    write(tmp_path / "extra.txt", "extra corpus\n")
    dsd, _ = load_text_dataset(files=str(tmp_path / "corpus" / "*.txt"), cache_dir=tmp_path)
    assert texts(dsd["train"]) == DOCS  # sorted glob order
    dsd, _ = load_text_dataset(files=str(tmp_path / "corpus"), cache_dir=tmp_path)  # a directory
    assert texts(dsd["train"]) == DOCS
    dsd, _ = load_text_dataset(
        files={"train": [str(tmp_path / "corpus" / "part0.txt"), str(tmp_path / "corpus" / "part[12].txt")],
               "validation": str(tmp_path / "val.txt")},
        eval_files={"extra": str(tmp_path / "extra.txt")}, cache_dir=tmp_path,
    )
    assert list(dsd) == ["train", "validation", "eval_extra"]
    assert texts(dsd["train"]) == DOCS[:3] and texts(dsd["eval_extra"]) == ["extra corpus"]
    # a structured training set with its own text column can go with a plain-text eval corpus
    jsonl = write(tmp_path / "t.jsonl", json.dumps({"body": "structured"}) + "\n")
    dsd, _ = load_text_dataset(files=jsonl, text_column="body", eval_files={"raw": str(tmp_path / "extra.txt")},
                               cache_dir=tmp_path)
    assert texts(dsd["train"]) == ["structured"] and texts(dsd["eval_raw"]) == ["extra corpus"]


def test_missing_files_and_bad_types_name_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_LLM_DATA_DIR", "/somewhere/data")
    with pytest.raises(ConfigError, match=r"data\.files: no file matches .*nope.*LIT_LLM_DATA_DIR.*/somewhere/data"):
        load_text_dataset(files=str(tmp_path / "nope" / "*.txt"), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"data\.files\.validation: no file matches"):
        load_text_dataset(files={"train": write(tmp_path / "a.txt", "x"), "validation": "missing.txt"})
    with pytest.raises(ConfigError, match=r"data\.eval_files\.wt: no file matches"):
        load_text_dataset(files=str(tmp_path / "a.txt"), eval_files={"wt": "missing.raw"}, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"data\.files: unsupported file type '\.docx'.*\.txt"):
        load_text_dataset(files=write(tmp_path / "a.docx", "x"), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"data\.sample_by"):
        load_text_dataset(files=str(tmp_path / "a.txt"), sample_by="sentence")
    with pytest.raises(ConfigError, match=r"data\.files and data\.hub_name"):
        load_text_dataset()


def test_one_split_mixes_plain_text_and_a_table_column(tmp_path):
    """Books (.txt) + a .tsv's sentence column in one training split, rows in file order."""
    book = write(tmp_path / "book.txt", "It was a dark night.\n\nThe end.\n")
    table = write(tmp_path / "train.tsv", "sentence\tlabel\na gripping film \t1\ndull \t0\n")
    more = write(tmp_path / "more.txt", "Epilogue.\n")
    dsd, fp = load_text_dataset(files=[book, table, more], text_column="sentence", cache_dir=tmp_path)
    assert dsd["train"]["text"] == ["It was a dark night.", "The end.", "Epilogue.", "a gripping film ", "dull "]
    _, fp_alone = load_text_dataset(files=[book, more], cache_dir=tmp_path)
    assert fp != fp_alone
    # the column key is checked against the table, and the message names it
    with pytest.raises(ConfigError, match=r"data\.text_column='body' is not a column of data\.files \(.*train\.tsv"):
        load_text_dataset(files=[book, table], text_column="body", cache_dir=tmp_path)


def test_missing_column_and_empty_corpus_messages(tmp_path):
    csv = write(tmp_path / "d.csv", "title,body\nA,alpha\nB,beta\n")
    with pytest.raises(ConfigError) as err:
        load_text_dataset(files=csv, text_column="txt", cache_dir=tmp_path)
    msg = str(err.value)
    assert "data.text_column='txt' is not a column of" in msg and "d.csv" in msg
    assert "['title', 'body']" in msg and "set data.text_column=" in msg
    nums = write(tmp_path / "n.csv", "label,body\n1,alpha\n")
    with pytest.raises(ConfigError, match=r"data\.text_column='label'.*not text"):
        load_text_dataset(files=nums, text_column="label", cache_dir=tmp_path)
    empty = write(tmp_path / "empty.txt", "\n   \n\n")
    with pytest.raises(ConfigError, match=r"empty\.txt.*no non-empty text"):
        load_text_dataset(files=empty, cache_dir=tmp_path)
    broken = write(tmp_path / "broken.jsonl", '{"text": "ok"}\n{not json\n')
    with pytest.raises(ConfigError, match=r"data\.files: .*broken\.jsonl line 2 is not JSON"):
        load_text_dataset(files=broken, cache_dir=tmp_path)


def test_fingerprint_follows_content_not_names(tmp_path):
    a = write(tmp_path / "a.txt", "alpha\nbeta\n")
    _, fp1 = load_text_dataset(files=a, cache_dir=tmp_path)
    b = write(tmp_path / "copy" / "renamed.txt", "alpha\nbeta\n")
    _, fp2 = load_text_dataset(files=b, cache_dir=tmp_path)
    assert fp1 == fp2  # same content elsewhere: same fingerprint
    _, fp3 = load_text_dataset(files=a, sample_by="document", cache_dir=tmp_path)
    assert fp3 != fp1  # loading options count
    write(tmp_path / "a.txt", "alpha\ngamma\n")
    ds, fp4 = load_text_dataset(files=a, cache_dir=tmp_path)
    assert fp4 != fp1 and texts(ds["train"]) == ["alpha", "gamma"]
    _, fp5 = load_text_dataset(files={"train": a, "validation": b}, cache_dir=tmp_path)
    _, fp6 = load_text_dataset(files={"train": b, "validation": a}, cache_dir=tmp_path)
    assert fp5 != fp6  # the split layout counts


def test_uncached_hub_dataset_fails_fast_when_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=1.5: False)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_text_dataset(hub_name="someone/not-cached-anywhere", cache_dir=tmp_path)
    elapsed = time.perf_counter() - start
    msg = str(err.value)
    assert "data.hub_name='someone/not-cached-anywhere' is not in the local Hugging Face cache" in msg
    assert "hub is unreachable" in msg and "data.files=" in msg
    assert elapsed < 10, f"took {elapsed:.1f}s: the offline switch did not prevent HTTP retries"
    # the offline switch is scoped to the call
    import huggingface_hub.constants as hub_constants

    assert datasets.config.HF_HUB_OFFLINE is False or os.environ.get("HF_HUB_OFFLINE")
    assert hub_constants.HF_HUB_OFFLINE == datasets.config.HF_HUB_OFFLINE


def test_hub_probe_is_bounded():
    sources.hub_reachable.cache_clear()
    start = time.perf_counter()
    assert sources.hub_reachable(timeout=0.5) in (True, False)
    assert time.perf_counter() - start < 3


def test_cached_hub_dataset_loads_offline(tmp_path, monkeypatch):
    """Fake a hub download in our cache (the layout `datasets` writes), then load it offline."""
    hf = tmp_path / "hf_datasets"
    src = write(tmp_path / "src.txt", "hub line one\nhub line two\n")
    datasets.load_dataset("text", data_files={"train": src}, cache_dir=str(hf))
    config_dir = next((hf / "text").iterdir())
    target = hf / "someuser___tiny" / "default"
    target.parent.mkdir()
    shutil.move(str(config_dir), str(target))
    for arrow in glob.glob(str(target / "*" / "*" / "text-train*.arrow")):
        os.rename(arrow, arrow.replace("text-train", "tiny-train"))
    try:
        with hub_offline_mode():
            datasets.load_dataset("someuser/tiny", cache_dir=str(hf))
    except Exception as e:  # the cache layout is a datasets internal
        pytest.skip(f"this datasets version does not load the faked hub cache: {e}")
    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=1.5: False)
    dsd, fp = load_text_dataset(hub_name="someuser/tiny", cache_dir=tmp_path,
                                eval_files={"extra": write(tmp_path / "extra.txt", "extra text")})
    assert texts(dsd["train"]) == ["hub line one", "hub line two"] and len(fp) == 64
    assert texts(dsd["eval_extra"]) == ["extra text"]


# ============================================================================ packing

def test_pack_blocks_overlap_by_one_and_drop_the_remainder():
    stream = np.arange(23, dtype=np.int32)
    blocks = pack_blocks(stream, 5)
    assert blocks.shape == (4, 6)  # (23 - 1) // 5
    for i in range(len(blocks)):
        assert blocks[i].tolist() == stream[i * 5 : i * 5 + 6].tolist()
        if i:
            assert blocks[i][0] == blocks[i - 1][-1]
    # dropping each block's last token and concatenating gives back the stream prefix
    assert np.concatenate([b[:-1] for b in blocks]).tolist() == stream[:20].tolist()
    assert pack_blocks(np.arange(5), 5).shape == (0, 6)
    assert pack_blocks(np.arange(6), 5).tolist() == [[0, 1, 2, 3, 4, 5]]


def test_collate_shifts_inputs_and_labels():
    blocks = np.arange(12, dtype=np.int32).reshape(2, 6)
    batch = collate_blocks(blocks)
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (2, 5)
    assert torch.equal(batch["input_ids"], torch.tensor([[0, 1, 2, 3, 4], [6, 7, 8, 9, 10]]))
    assert torch.equal(batch["labels"], torch.tensor([[1, 2, 3, 4, 5], [7, 8, 9, 10, 11]]))
    assert torch.equal(collate_blocks(list(blocks))["labels"], batch["labels"])


# ============================================================================ data module

def make_dm(tmp_path, files, **kw) -> CorpusDataModule:
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    return CorpusDataModule(files=files, **kw)


def with_char_tokenizer(dm: CorpusDataModule) -> CorpusDataModule:
    dm.load_raw()
    dm.set_tokenizer(train_char(t for batch in dm.train_texts() for t in batch))
    return dm


def test_rows_split_is_seeded_and_complete(tmp_path):
    path = write(tmp_path / "c.txt", "\n".join(f"line {i}" for i in range(100)))
    a = make_dm(tmp_path, path, val_fraction=0.1, split_seed=7).load_raw()
    b = make_dm(tmp_path, path, val_fraction=0.1, split_seed=7).load_raw()
    c = make_dm(tmp_path, path, val_fraction=0.1, split_seed=8).load_raw()
    assert texts(a["validation"]) == texts(b["validation"]) and len(a["validation"]) == 10
    assert texts(a["validation"]) != texts(c["validation"])
    assert sorted(texts(a["train"]) + texts(a["validation"])) == sorted(f"line {i}" for i in range(100))
    order = [int(t.split()[1]) for t in texts(a["train"])]
    assert order == sorted(order)  # document order is kept inside each part


def test_tail_split_matches_nanogpt(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(1000)) + "\n"
    path = write(tmp_path / "doc.txt", text)
    raw = make_dm(tmp_path, path, sample_by="document", holdout="tail", val_fraction=0.1).load_raw()
    n = len(text)
    assert texts(raw["train"]) == [text[: int(n * 0.9)]]
    assert texts(raw["validation"]) == [text[int(n * 0.9):]]


def test_data_fingerprint_covers_the_split(tmp_path):
    path = write(tmp_path / "c.txt", "\n".join(f"line {i}" for i in range(20)))

    def fingerprint(**kw):
        dm = make_dm(tmp_path, path, **kw)
        dm.load_raw()
        return dm.data_fingerprint

    fps = {fingerprint(), fingerprint(val_fraction=0.2), fingerprint(split_seed=1), fingerprint(holdout="tail")}
    assert len(fps) == 4 and fingerprint() == fingerprint()


def test_split_config_errors(tmp_path):
    path = write(tmp_path / "c.txt", "a\nb\nc\n")
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"data\.val_fraction"):
            make_dm(tmp_path, path, val_fraction=bad).load_raw()
    with pytest.raises(ConfigError, match=r"data\.holdout=tail"):
        make_dm(tmp_path, write(tmp_path / "d.txt", "one document"), sample_by="document").load_raw()
    with pytest.raises(ConfigError, match=r"data\.holdout='random'"):
        make_dm(tmp_path, path, holdout="random")
    with pytest.raises(ConfigError, match=r"no 'train' split"):
        make_dm(tmp_path, {"validation": path}).load_raw()


def test_existing_validation_and_test_splits_are_used(tmp_path):
    dm = make_dm(tmp_path, {"train": write(tmp_path / "t.txt", "\n".join(DOCS)),
                            "validation": write(tmp_path / "v.txt", "held out text"),
                            "test": write(tmp_path / "x.txt", "test text")},
                 eval_files={"extra": write(tmp_path / "e.txt", "extra text")}, val_fraction=None)
    raw = dm.load_raw()
    assert list(raw) == ["train", "validation", "eval_test", "eval_extra"]
    assert texts(raw["train"]) == DOCS and texts(raw["validation"]) == ["held out text"]
    assert dm.test_names == ["validation", "test", "extra"]


def test_tokenize_pack_and_loaders(tmp_path):
    dm = with_char_tokenizer(make_dm(
        tmp_path, {"train": write(tmp_path / "t.txt", "\n".join(DOCS)), "validation": write(tmp_path / "v.txt", "held out text")},
        eval_files={"extra": write(tmp_path / "e.txt", "extra corpus text")}, block_size=8, batch_size=2))
    dm.prepare_data()
    dm.setup("fit")
    eos = token_id(dm.tokenizer, "<eos>")
    expected = []
    for doc in DOCS:
        expected += dm.tokenizer.encode(doc).ids + [eos]
    blocks = dm.blocks["train"]
    assert blocks.shape == ((len(expected) - 1) // 8, 9)
    assert np.concatenate([b[:-1] for b in blocks]).tolist() == expected[: len(blocks) * 8]
    assert dm.stats["train"] == {"documents": len(DOCS), "tokens": len(expected), "blocks": len(blocks),
                                 "dtype": "uint16"}

    batches = list(dm.train_dataloader())
    assert len(batches) == len(blocks) // 2  # drop_last
    for batch in batches:
        assert batch["input_ids"].shape == batch["labels"].shape == (2, 8)
        assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])
    seen = torch.cat([b["input_ids"] for b in batches])
    assert len({tuple(r) for r in seen.tolist()}) == len(seen)  # no block twice in an epoch

    val = list(dm.val_dataloader())
    assert sum(len(b["input_ids"]) for b in val) == len(dm.blocks["validation"])
    tests = dm.test_dataloader()
    assert dm.test_names == ["validation", "extra"] and len(tests) == 2


def test_block_size_larger_than_a_split_is_a_config_error(tmp_path):
    dm = with_char_tokenizer(make_dm(
        tmp_path, {"train": write(tmp_path / "t.txt", "\n".join(DOCS * 10)), "validation": write(tmp_path / "v.txt", "tiny")},
        block_size=16))
    with pytest.raises(ConfigError, match=r"data\.block_size=16 is larger than the validation split \(5 tokens\).*data\.val_fraction"):
        dm.setup("fit")


def test_tokenized_cache_is_reused_and_temp_dirs_are_ignored(tmp_path, monkeypatch):
    path = write(tmp_path / "c.txt", "\n".join(DOCS * 4))
    calls = []
    real = corpus_mod.tokenize_split

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(corpus_mod, "tokenize_split", counting)
    dm = with_char_tokenizer(make_dm(tmp_path, path, block_size=4, val_fraction=0.25))
    cache_root = dm.tokenized_dir
    # a run killed mid-write leaves a temp dir: it must not count as a cache entry
    (cache_root / "train.tmp-999-dead").mkdir(parents=True)
    (cache_root / "train.tmp-999-dead" / "garbage").write_text("x")
    dm.setup("fit")
    assert len(calls) == 2  # train + validation
    first = {k: v.copy() for k, v in dm.blocks.items()}

    dm2 = make_dm(tmp_path, path, block_size=4, val_fraction=0.25)  # a second run
    dm2.load_raw()
    dm2.set_tokenizer(dm.tokenizer, dm.tokenizer_fingerprint)
    dm2.prepare_data()
    dm2.setup("fit")
    assert len(calls) == 2, "second setup must load from the cache, not tokenize"
    for k in first:
        assert np.array_equal(first[k], dm2.blocks[k])
    assert dm2.stats == dm.stats

    dm3 = make_dm(tmp_path, path, block_size=5, val_fraction=0.25)  # a new block size is a new entry
    dm3.load_raw()
    dm3.set_tokenizer(dm.tokenizer)
    dm3.setup()
    assert len(calls) == 4


def test_real_corpus_shakespeare_tail_split(tmp_path):
    data = shared_data_dir()
    path = data / "tinyshakespeare" / "input.txt" if data else None
    if path is None or not path.is_file():
        pytest.skip("tinyshakespeare not found (set LIT_LLM_DATA_DIR or provide ../shared/data)")
    dm = make_dm(tmp_path, str(path), sample_by="document", holdout="tail", val_fraction=0.1, block_size=256)
    dm = with_char_tokenizer(dm)
    dm.setup()
    # nanoGPT shakespeare_char: 1,003,854 train and 111,540 val characters (+1 <eos> each here)
    assert dm.stats["train"]["tokens"] == 1_003_855 and dm.stats["validation"]["tokens"] == 111_541
    assert dm.stats["train"]["blocks"] == (1_003_855 - 1) // 256


# ============================================================================ resumable shuffling

def test_sampler_permutation_and_resume_skip():
    s = ResumableRandomSampler(50, seed=3)
    s.set_epoch(2)
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(3 + 2)).tolist()
    assert list(s) == expected and len(s) == 50
    s.start_index = 17
    assert len(s) == 50  # Lightning counts the skipped batches itself
    assert list(s) == expected[17:]
    assert list(s) == expected  # the skip is used once
    s.set_epoch(3)
    assert list(s) != expected


def test_sampler_shards_across_replicas():
    shares = [list(ResumableRandomSampler(10, seed=0, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(share) == 3 for share in shares)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist()
    assert sorted(sum(shares, [])) == sorted(perm[:9])
    assert isinstance(ResumableRandomSampler(4), torch.utils.data.DistributedSampler)  # Lightning won't re-wrap it


def _epoch_batches(dm, epoch):
    sampler = ResumableRandomSampler(len(dm.blocks["train"]), dm.shuffle_seed)
    sampler.set_epoch(epoch)
    return [b["input_ids"] for b in dm._loader(dm.blocks["train"], dm.batch_size, sampler=sampler, drop_last=True)]


@pytest.mark.parametrize("global_step,accumulate", [(0, 1), (3, 1), (5, 1), (2, 2), (7, 1)])
def test_train_dataloader_resumes_where_the_run_stopped(tmp_path, global_step, accumulate):
    dm = with_char_tokenizer(make_dm(tmp_path, write(tmp_path / "c.txt", "\n".join(DOCS * 4)),
                                     block_size=4, batch_size=3, val_fraction=0.2))
    dm.setup()
    per_epoch = len(dm.blocks["train"]) // 3
    assert per_epoch >= 4
    uninterrupted = _epoch_batches(dm, 0) + _epoch_batches(dm, 1)
    dm.trainer = SimpleNamespace(global_step=global_step, accumulate_grad_batches=accumulate,
                                 limit_train_batches=1.0, world_size=1, global_rank=0)
    consumed = global_step * accumulate
    resumed = [b["input_ids"] for b in dm.train_dataloader()]
    expected = uninterrupted[consumed:per_epoch] if consumed < per_epoch else uninterrupted[consumed:]
    assert len(resumed) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(resumed, expected))


class _RecordBatches(__import__("pytorch_lightning").LightningModule):
    """Trains nothing; remembers the first token of every sample of every training batch."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["input_ids"][:, 0].tolist())
        return (self.w * batch["input_ids"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader`", "ignore:Be aware that when using `ckpt_path`")
@pytest.mark.parametrize("accumulate,limit", [(1, 1.0), (2, 6)])
def test_lightning_resume_sees_the_uninterrupted_batches(tmp_path, accumulate, limit):
    """Real Trainer: resume from checkpoints mid-epoch, at an epoch boundary and in epoch 2
    (also with gradient accumulation and limit_train_batches)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    text = "\n".join(f"{d} number {i}" for i, d in enumerate(DOCS * 3))
    path = write(tmp_path / "c.txt", text)

    def run(max_steps, ckpt_path=None, ckpt_dir=None):
        dm = with_char_tokenizer(make_dm(tmp_path, path, block_size=16, batch_size=4, val_fraction=0.1))
        dm.setup()
        module = _RecordBatches()
        callbacks = [ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=1, save_top_k=-1,
                                     filename="{step}")] if ckpt_dir else []
        trainer = pl.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, accelerator="cpu", devices=1,
                             callbacks=callbacks, enable_checkpointing=bool(ckpt_dir),
                             accumulate_grad_batches=accumulate, limit_train_batches=limit,
                             default_root_dir=str(tmp_path))
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return module.seen, min(len(dm.blocks["train"]) // 4, limit if isinstance(limit, int) else 10**9)

    steps = 10 // accumulate
    full, per_epoch = run(steps, ckpt_dir=tmp_path / "ckpt")
    assert per_epoch % accumulate == 0 and 4 <= per_epoch < 10 and len(full) == 10
    for step in (1, per_epoch // accumulate, per_epoch // accumulate + 1):
        resumed, _ = run(steps, ckpt_path=str(tmp_path / "ckpt" / f"step={step}.ckpt"))
        assert resumed == full[step * accumulate:], f"resumed from step {step}"
