"""Processes that start together (DDP ranks under SLURM or torchrun) build a shared cache once."""
from __future__ import annotations

import logging
import multiprocessing as mp
from pathlib import Path

import pytest

from lit_llm.utils_io import build_lock

CORPUS = Path(__file__).resolve().parents[2] / "lit_llm" / "corpora" / "quickstart.txt"


def _rank(cache_dir: str, barrier, queue) -> None:
    """One 'rank': get the tokenizer and the tokenized splits; report what it built itself."""
    from lit_llm.data.corpus import CorpusDataModule
    from lit_llm.tokenization import get_tokenizer

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

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
               len(dm.blocks["train"])))


@pytest.mark.ddp
def test_two_processes_build_the_cache_once(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(str(tmp_path / "cache"), barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    trained, tokenized, blocks = zip(*results)
    assert sum(trained) == 1  # one process trained the tokenizer, the other loaded it
    assert sorted(tokenized) == [0, 2]  # one process tokenized both splits, the other only read them
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
