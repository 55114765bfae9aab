"""CorpusDataModule with objective=mlm: masked batches from the same packed blocks, exact resumes."""
from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lit_llm.data.collate import IGNORE_INDEX
from lit_llm.data.corpus import CorpusDataModule
from lit_llm.errors import ConfigError
from lit_llm.tokenization import train_char

DOCS = [f"story number {i}: the fox jumped over the lazy dog and ran home before dark." for i in range(60)]


def make_dm(tmp_path: Path, **kw) -> CorpusDataModule:
    path = tmp_path / "c.txt"
    path.write_text("\n".join(DOCS))
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    kw.setdefault("block_size", 32)
    kw.setdefault("batch_size", 8)
    kw.setdefault("val_fraction", 0.2)
    dm = CorpusDataModule(files=str(path), **kw)
    dm.load_raw()
    dm.set_tokenizer(train_char(t for batch in dm.train_texts() for t in batch))
    dm.setup()
    return dm


def test_mlm_batches_mask_the_first_block_size_tokens(tmp_path):
    dm = make_dm(tmp_path, objective="mlm", mlm_probability=0.3)
    clm = make_dm(tmp_path)  # same cache entry: the packed blocks are shared
    assert clm.tokenized_dir == dm.tokenized_dir
    torch.manual_seed(0)
    mlm_batch = next(iter(dm.train_dataloader()))
    clm_batch = next(iter(clm.train_dataloader()))
    assert set(mlm_batch) == {"input_ids", "attention_mask", "labels"} and set(clm_batch) == {"input_ids", "labels"}
    original = clm_batch["input_ids"]  # block[:, :-1], same sampler order
    assert mlm_batch["input_ids"].shape == original.shape == (8, 32)
    assert (mlm_batch["attention_mask"] == 1).all()
    chosen = mlm_batch["labels"] != IGNORE_INDEX
    assert torch.equal(mlm_batch["labels"][chosen], original[chosen])
    assert torch.equal(mlm_batch["input_ids"][~chosen], original[~chosen])
    eos = dm.special_ids["eos"]
    assert not chosen[original == eos].any()  # document ends are never masked
    assert 0.2 < chosen.float().mean() < 0.4
    assert (mlm_batch["input_ids"][chosen] == dm.special_ids["mask"]).float().mean() > 0.6


def test_mlm_eval_batches_are_fixed_and_leave_the_global_rng_alone(tmp_path):
    dm = make_dm(tmp_path, objective="mlm")
    state = torch.get_rng_state()
    first = list(dm.val_dataloader())
    second = list(dm.val_dataloader())
    assert torch.equal(torch.get_rng_state(), state)
    assert len(first) == len(second) > 0
    assert all(torch.equal(a[k], b[k]) for a, b in zip(first, second) for k in a)
    assert all((b["labels"] != IGNORE_INDEX).any() for b in first)  # every batch has a masked token
    (test,) = dm.test_dataloader()
    assert all(torch.equal(a["labels"], b["labels"]) for a, b in zip(first, test))
    assert sum(len(b["input_ids"]) for b in first) == len(dm.blocks["validation"])


def test_objective_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="data.objective='t5'"):
        CorpusDataModule(files="x.txt", objective="t5")
    with pytest.raises(ConfigError, match="data.mlm_probability"):
        CorpusDataModule(files="x.txt", objective="mlm", mlm_probability=1.5)
    assert "objective" not in make_dm(tmp_path).state_dict()  # clm checkpoints are unchanged
    assert make_dm(tmp_path, objective="mlm").state_dict()["objective"] == "mlm"


class _RecordMasks(pl.LightningModule):
    """Dropout consumes the global RNG between batches; saves/restores it as tasks/base.py does."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(64, 8)
        self.drop = torch.nn.Dropout(0.5)
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(torch.stack([batch["input_ids"], batch["labels"]]))
        return self.drop(self.emb(batch["input_ids"])).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint):
        torch.set_rng_state(checkpoint["rng_state"]["torch"])


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`", "ignore:You passed in a `val_dataloader`")
def test_resumed_run_draws_the_same_masks(tmp_path):
    """Masks come from the global RNG at collate time; Lightning does not prefetch from a sized
    loader, so the RNG state saved after step k is the one the uninterrupted run masks batch k+1 with."""

    def run(max_steps, ckpt_path=None):
        pl.seed_everything(0)
        dm = make_dm(tmp_path, objective="mlm", batch_size=4)
        module = _RecordMasks()
        trainer = pl.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                             accelerator="cpu", devices=1, default_root_dir=str(tmp_path))
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return trainer, module.seen

    trainer, full = run(6)
    first, _ = run(3)
    first.save_checkpoint(tmp_path / "step3.ckpt")
    _, resumed = run(6, ckpt_path=str(tmp_path / "step3.ckpt"))
    assert len(full) == 6 and len(resumed) == 3
    assert all(torch.equal(a, b) for a, b in zip(full[3:], resumed))
