"""Cache entries carry a manifest (size and checksum of every file): a truncated or altered entry is found when it
is loaded, reported in one warning and rebuilt; a good one is read as it is."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import xxhash

from lit_llm import utils_io
from lit_llm.data.base import STATS_FILE
from lit_llm.data.corpus import CorpusDataModule
from lit_llm.tokenization import TOKENIZER_FILE, get_tokenizer, tokenizer_cache_path, train_char
from lit_llm.utils_io import MANIFEST_FILE, cached_dir, discard_dir, verify_manifest, write_manifest

DOCS = [f"document {i}: the quick brown fox jumps over the lazy dog, {i * 7} times." for i in range(40)]


# ----------------------------------------------------------------------------- helpers

def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def largest_file(entry: Path) -> Path:
    """The entry's biggest data file (the tokens), whatever format the data module writes."""
    files = json.loads((entry / MANIFEST_FILE).read_text())["files"]
    rel = max((r for r in files if r != STATS_FILE), key=lambda r: files[r]["size"])
    return entry / rel


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Change one byte in place: same size, other content."""
    with open(path, "r+b") as f:
        f.seek(offset if offset is not None else os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


class Corpus:
    """A tiny corpus data module on a character tokenizer, counting the splits it builds."""

    def __init__(self, tmp_path: Path, monkeypatch):
        self.path = tmp_path / "corpus.txt"
        self.path.write_text("\n".join(DOCS) + "\n")
        self.cache = str(tmp_path / "cache")
        self.built: list[str] = []
        real = CorpusDataModule._build_split

        def counting(dm, split, out_dir):
            self.built.append(split)
            return real(dm, split, out_dir)

        monkeypatch.setattr(CorpusDataModule, "_build_split", counting)
        self.tokenizer = train_char(DOCS)

    def open(self) -> CorpusDataModule:
        dm = CorpusDataModule(files=str(self.path), block_size=8, batch_size=2, val_fraction=0.25, cache_dir=self.cache)
        dm.load_raw()
        dm.set_tokenizer(self.tokenizer)
        dm.prepare_data()
        dm.setup("fit")
        return dm


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    c = Corpus(tmp_path, monkeypatch)
    dm = c.open()
    c.blocks = {k: np.array(v, copy=True) for k, v in dm.blocks.items()}  # copies: the files change under the maps
    c.entry = dm.tokenized_dir / "train"
    assert sorted(c.built) == ["train", "validation"]
    c.built.clear()
    return c


def reopen_after_damage(corpus: Corpus, caplog) -> tuple[CorpusDataModule, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lit_llm"):
        dm = corpus.open()
    return dm, warnings_of(caplog)


# ----------------------------------------------------------------------------- tokenized splits

def test_good_entry_is_read_as_it_is(corpus, caplog):
    mtimes = {p: p.stat().st_mtime_ns for p in corpus.entry.rglob("*")}
    dm, warned = reopen_after_damage(corpus, caplog)
    assert corpus.built == [] and warned == []
    assert {p: p.stat().st_mtime_ns for p in corpus.entry.rglob("*")} == mtimes
    for split, blocks in corpus.blocks.items():
        assert np.array_equal(dm.blocks[split], blocks)


def test_every_file_is_in_the_manifest_written_last(corpus):
    manifest = json.loads((corpus.entry / MANIFEST_FILE).read_text())
    on_disk = sorted(p.relative_to(corpus.entry).as_posix() for p in corpus.entry.rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == [r for r in on_disk if r != MANIFEST_FILE]
    assert STATS_FILE in manifest["files"] and manifest["checksum"] == "xxh3_128"
    for rel, rec in manifest["files"].items():
        assert rec["size"] == (corpus.entry / rel).stat().st_size
        assert rec["checksum"] == utils_io.file_checksum(corpus.entry / rel)


def test_truncated_file_is_reported_once_and_rebuilt(corpus, caplog):
    victim = largest_file(corpus.entry)
    size = victim.stat().st_size
    os.truncate(victim, size // 2)
    dm, warned = reopen_after_damage(corpus, caplog)
    assert len(warned) == 1, warned
    rel = victim.relative_to(corpus.entry).as_posix()
    assert warned[0] == (f"cache: {corpus.entry} is damaged ({rel}: {size // 2:,} of {size:,} bytes, truncated); "
                         "rebuilding it")
    assert corpus.built == ["train"]  # only the damaged split
    assert victim.stat().st_size == size and verify_manifest(corpus.entry) == []
    for split, blocks in corpus.blocks.items():
        assert np.array_equal(dm.blocks[split], blocks)
    assert not [p for p in corpus.entry.parent.iterdir() if utils_io.is_temp_path(p)]  # the damaged copy is gone


def test_one_altered_byte_is_found_by_its_checksum(corpus, caplog):
    victim = largest_file(corpus.entry)
    size = victim.stat().st_size
    flip_byte(victim)
    assert victim.stat().st_size == size
    dm, warned = reopen_after_damage(corpus, caplog)
    rel = victim.relative_to(corpus.entry).as_posix()
    assert warned == [f"cache: {corpus.entry} is damaged ({rel}: checksum differs, altered); rebuilding it"]
    assert corpus.built == ["train"]
    assert np.array_equal(dm.blocks["train"], corpus.blocks["train"])


def test_missing_file_and_missing_manifest(corpus, caplog):
    (corpus.entry / STATS_FILE).unlink()
    dm, warned = reopen_after_damage(corpus, caplog)
    assert warned == [f"cache: {corpus.entry} is damaged ({STATS_FILE}: missing); rebuilding it"]
    assert corpus.built == ["train"] and dm.stats["train"]["blocks"] == len(corpus.blocks["train"])

    corpus.built.clear()
    (corpus.entry / MANIFEST_FILE).unlink()  # as an entry written before manifests existed
    dm, warned = reopen_after_damage(corpus, caplog)
    assert len(warned) == 1 and warned[0].startswith(f"cache: {corpus.entry} has no {MANIFEST_FILE} (written by an "
                                                     "older lit-llm") and warned[0].endswith("; rebuilding it")
    assert corpus.built == ["train"]
    assert np.array_equal(dm.blocks["train"], corpus.blocks["train"])


def test_prepare_data_and_setup_check_an_entry_once(corpus, monkeypatch):
    checked = []
    real = utils_io.verify_manifest
    monkeypatch.setattr(utils_io, "verify_manifest", lambda d: checked.append(Path(d).name) or real(d))
    corpus.open()  # prepare_data, then setup
    assert sorted(checked) == ["train", "validation"]


# ----------------------------------------------------------------------------- tokenizers

class Texts:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return iter(DOCS)


def tokenizer_entry(tmp_path) -> tuple[Path, Texts, str]:
    texts = Texts()
    _, fp = get_tokenizer("bpe", texts, "corpus-fp", tmp_path, vocab_size=300, min_frequency=1)
    return tokenizer_cache_path(tmp_path, "bpe", "corpus-fp", 300, 1), texts, fp


def load_again(tmp_path, texts, caplog) -> tuple[str, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lit_llm"):
        _, fp = get_tokenizer("bpe", texts, "corpus-fp", tmp_path, vocab_size=300, min_frequency=1)
    return fp, warnings_of(caplog)


def test_tokenizer_cache_hit_reads_without_training(tmp_path, caplog):
    entry, texts, fp = tokenizer_entry(tmp_path)
    assert sorted(p.name for p in entry.iterdir()) == [MANIFEST_FILE, TOKENIZER_FILE]
    again, warned = load_again(tmp_path, texts, caplog)
    assert (again, warned, texts.calls) == (fp, [], 1)


@pytest.mark.parametrize("damage", ["truncate", "alter"])
def test_damaged_tokenizer_is_reported_once_and_retrained(tmp_path, caplog, damage):
    entry, texts, fp = tokenizer_entry(tmp_path)
    victim = entry / TOKENIZER_FILE
    size = victim.stat().st_size
    if damage == "truncate":
        os.truncate(victim, 100)
        problem = f"{TOKENIZER_FILE}: 100 of {size:,} bytes, truncated"
    else:
        flip_byte(victim, 10)
        problem = f"{TOKENIZER_FILE}: checksum differs, altered"
    again, warned = load_again(tmp_path, texts, caplog)
    assert warned == [f"cache: {entry} is damaged ({problem}); rebuilding it"]
    assert texts.calls == 2 and again == fp and verify_manifest(entry) == []


def test_single_file_tokenizer_entry_of_an_older_version_is_retrained(tmp_path, caplog):
    entry, texts, fp = tokenizer_entry(tmp_path)
    old = entry.with_name(entry.name + ".json")
    os.rename(entry / TOKENIZER_FILE, old)  # the layout before entries had a manifest
    discard_dir(entry)
    again, warned = load_again(tmp_path, texts, caplog)
    assert len(warned) == 1 and warned[0].startswith(f"cache: {old} has no manifest")
    assert not old.exists() and texts.calls == 2 and again == fp


# ----------------------------------------------------------------------------- the helpers

def test_verify_manifest_lists_every_problem_and_ignores_extra_files(tmp_path):
    d = tmp_path / "entry"
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(b"a" * 100)
    (d / "sub" / "b.bin").write_bytes(b"b" * 10)
    (d / "c.bin").write_bytes(b"c")
    write_manifest(d)
    assert verify_manifest(d) == []
    (d / "cache-extra.arrow").write_bytes(b"a loader's own file")
    assert verify_manifest(d) == []
    os.truncate(d / "a.bin", 40)
    (d / "sub" / "b.bin").write_bytes(b"b" * 1500)
    (d / "c.bin").unlink()
    assert verify_manifest(d) == ["a.bin: 40 of 100 bytes, truncated", "c.bin: missing",
                                  "sub/b.bin: 1,500 bytes where 10 were written"]
    (d / MANIFEST_FILE).write_text("{not json")
    assert verify_manifest(d) == [f"{MANIFEST_FILE} unreadable (JSONDecodeError)"]
    (d / MANIFEST_FILE).write_text('{"version": 99}')
    assert verify_manifest(d) == [f"{MANIFEST_FILE} of an unknown format"]
    assert verify_manifest(tmp_path / "absent") == [f"no {MANIFEST_FILE}"]


def test_cached_dir_builds_once_and_a_failed_build_leaves_nothing(tmp_path):
    calls = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "data.bin").write_bytes(b"x" * 1000)

    final = cached_dir(tmp_path / "e", build)
    assert cached_dir(tmp_path / "e", build) == final and len(calls) == 1
    assert sorted(p.name for p in final.iterdir()) == ["data.bin", MANIFEST_FILE]

    def broken(out: Path) -> None:
        (out / "half").write_bytes(b"y")
        raise RuntimeError("killed while building")

    with pytest.raises(RuntimeError):
        cached_dir(tmp_path / "f", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


def test_checksums_read_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(utils_io, "_CHECK_CHUNK", 7)  # many reads, the last one short
    p = tmp_path / "f"
    p.write_bytes(bytes(range(256)) * 3)
    assert utils_io.file_checksum(p) == xxhash.xxh3_128(p.read_bytes()).hexdigest()
