"""The task registry: one entry per task kind, and nothing else in lit-llm switches on task names.

A task kind (`task_kind` of its LightningModule, stored in every checkpoint) maps to a `TaskSpec`:
its LightningModule, the data it reads (data module class and, for corpora, the objective), and an
example data override for error messages. What a task reports lives on its class as explicit hooks
of `BackboneTask` (lit_llm/tasks/base.py): `report_statistics()` (metrics as functions of the
per-example test records, for bootstrap intervals), `report_examples(k)` (worst/best examples and
the score that ranks them), `report_plots(out_dir)`, `write_outputs(out_dir)` (predictions,
confusion matrix), `metric_info`, `baselines(datamodule)` and `generate_sample(...)`.

Adding a task: a module under `lit_llm/tasks/` with a `BackboneTask` subclass, one entry below, and
its configs (`conf/task/<kind>.yaml`, an experiment in `conf/experiment/`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from lit_llm.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from lit_llm.tasks.base import BackboneTask


@dataclass(frozen=True)
class DataUse:
    """Data a task reads: a data module class (its `_target_`'s last part) and, for the corpus data
    module, the `data.objective` it must have (None: any)."""

    data_module: str
    objective: str | None = None

    def matches(self, data_cfg: Mapping[str, Any]) -> bool:
        target = str(data_cfg.get("_target_", "")).rsplit(".", 1)[-1]
        return target == self.data_module and (
            self.objective is None or data_cfg.get("objective", "clm") == self.objective)


@dataclass(frozen=True)
class TaskSpec:
    kind: str
    task: str                   # "package.module.Class" of the LightningModule
    data: tuple[DataUse, ...]   # what it can train and evaluate on
    data_example: str           # a data override that suits it, for error messages

    def task_class(self) -> type[BackboneTask]:
        module, _, name = self.task.rpartition(".")
        return getattr(importlib.import_module(module), name)

    def check_data(self, data_cfg: Mapping[str, Any], what: str) -> None:
        """Refuse data this task cannot evaluate (a QA checkpoint cannot score SST-2)."""
        if any(use.matches(data_cfg) for use in self.data):
            return
        target = str(data_cfg.get("_target_", ""))
        name = target.rsplit(".", 1)[-1]
        if name == "CorpusDataModule":
            name += f" with data.objective={data_cfg.get('objective', 'clm')}"
        raise ConfigError(f"{what} is a {self.kind} checkpoint but the data config is {name or target!r}, which "
                          f"{self.kind} cannot evaluate; choose {self.kind} data, e.g. {self.data_example}")


TASKS: dict[str, TaskSpec] = {spec.kind: spec for spec in (
    TaskSpec("clm", "lit_llm.tasks.clm.CausalLMTask", (DataUse("CorpusDataModule", "clm"),),
             "data=tinyshakespeare"),
    TaskSpec("mlm", "lit_llm.tasks.mlm.MaskedLMTask", (DataUse("CorpusDataModule", "mlm"),),
             "data=gutenberg +data.objective=mlm"),
    TaskSpec("classification", "lit_llm.tasks.classification.ClassificationTask",
             (DataUse("ClassificationDataModule"),), "data=sst2"),
    TaskSpec("qa", "lit_llm.tasks.qa.QuestionAnsweringTask", (DataUse("QADataModule"),), "data=squad"),
    TaskSpec("sft", "lit_llm.tasks.sft.SFTTask", (DataUse("SFTDataModule"),), "data=instruct_mix"),
    TaskSpec("dpo", "lit_llm.tasks.dpo.DPOTask", (DataUse("PreferenceDataModule"),), "data=hh_rlhf"),
    TaskSpec("seq2seq", "lit_llm.tasks.seq2seq.Seq2SeqTask",
             (DataUse("Seq2SeqDataModule"), DataUse("CorpusDataModule", "denoise")), "data=multi30k_de_en"),
)}


def task_spec(kind: str | None, what: str) -> TaskSpec:
    """The registry entry of `kind`; a ConfigError naming `what` (e.g. the checkpoint) otherwise."""
    if kind not in TASKS:
        raise ConfigError(f"{what}: task kind {kind!r} is not one of {sorted(TASKS)}")
    return TASKS[kind]


__all__ = ["TASKS", "TaskSpec", "DataUse", "task_spec"]
