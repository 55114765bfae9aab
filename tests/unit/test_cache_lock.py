"""Processes that start together (DDP ranks under SLURM or torchrun) build a shared cache once."""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from lit_llm.utils_io import build_lock

CORPUS = Path(__file__).resolve().parents[2] / "lit_llm" / "corpora" / "quickstart.txt"


def _rank(cache_dir: str, barrier, queue) -> None:
    """One 'rank': get the tokenizer and the tokenized splits; report what it built itself."""
    from lit_llm.data.corpus import CorpusDataModule
    from lit_llm.tokenization import get_tokenizer

    messages: list[str] = []
    warnings: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    logger = logging.getLogger("lit_llm")
    logger.setLevel(logging.INFO)
    logger.addHandler(Keep())
    dm = CorpusDataModule(files=[str(CORPUS)], block_size=32, batch_size=4, cache_dir=cache_dir)
    dm.load_raw()
    barrier.wait()  # both start building at the same moment
    tok, fp = get_tokenizer("bpe", dm.train_texts, dm.data_fingerprint, cache_dir, vocab_size=300)
    dm.set_tokenizer(tok, fp)
    dm.prepare_data()
    dm.setup("fit")
    queue.put((sum("trained" in m for m in messages), sum(m.startswith("data: tokenized") for m in messages),
               len(dm.blocks["train"]), warnings))


def _two_ranks(cache_dir: str) -> list[tuple]:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(cache_dir, barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


@pytest.mark.ddp
def test_two_processes_build_the_cache_once(tmp_path):
    trained, tokenized, blocks, warnings = zip(*_two_ranks(str(tmp_path / "cache")))
    assert sum(trained) == 1  # one process trained the tokenizer, the other loaded it
    assert sorted(tokenized) == [0, 2]  # one process tokenized both splits, the other only read them
    assert blocks[0] == blocks[1] > 0
    assert warnings == ([], [])


@pytest.mark.ddp
def test_two_processes_rebuild_a_damaged_entry_once_with_one_warning(tmp_path):
    """Both ranks find the truncated split; one warns and rebuilds it, the other waits and reads the new copy."""
    from lit_llm.data.corpus import CorpusDataModule
    from lit_llm.tokenization import get_tokenizer

    cache_dir = str(tmp_path / "cache")
    dm = CorpusDataModule(files=[str(CORPUS)], block_size=32, batch_size=4, cache_dir=cache_dir)
    dm.load_raw()
    dm.set_tokenizer(*get_tokenizer("bpe", dm.train_texts, dm.data_fingerprint, cache_dir, vocab_size=300))
    dm.prepare_data()
    entry = dm.tokenized_dir / "train"
    victim = max((p for p in entry.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    os.truncate(victim, victim.stat().st_size // 2)

    trained, tokenized, blocks, warnings = zip(*_two_ranks(cache_dir))
    assert sum(trained) == 0 and sorted(tokenized) == [0, 1]  # only the damaged split, by one rank
    assert sorted(len(w) for w in warnings) == [0, 1]
    assert f"cache: {entry} is damaged ({victim.name}: " in sum(warnings, [])[0]
    assert blocks[0] == blocks[1] > 0


def test_build_lock_is_released_on_error(tmp_path):
    target = tmp_path / "entry"
    try:
        with build_lock(target):
            raise RuntimeError("crash while building")
    except RuntimeError:
        pass
    with build_lock(target):  # would block forever if the failed builder kept the lock
        pass
