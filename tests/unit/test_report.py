"""report.json / report.md: deterministic, intervals around the logged metrics, worst/best examples; the
tasks' report hooks (statistics, examples, plots) that feed it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lit_llm.reporting.report import VOLATILE_KEYS, build_report, extremes, write_report
from lit_llm.tasks.classification import ClassificationTask
from lit_llm.tasks.clm import CausalLMTask
from lit_llm.tasks.mlm import MaskedLMTask
from lit_llm.tasks.qa import QuestionAnsweringTask
from lit_llm.tasks.seq2seq import Seq2SeqTask

SETTINGS = {"resamples": 500, "confidence": 0.95, "seed": 0, "examples": 2}
TINY = {"vocab_size": 64, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32}
ENCODER = {**TINY, "arch": "encoder", "intermediate_size": 64}
GPT = {**TINY, "arch": "gpt"}
ENCODER_DECODER = {**TINY, "arch": "encoder_decoder", "n_decoder_layer": 1, "intermediate_size": 64}


def classification_records(n=200, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.7, label, rng.integers(0, 3, n))
    return {"test": {"pred": pred.tolist(), "label": label.tolist(), "p_true": rng.random(n).round(6).tolist(),
                     "text": [f"sentence {i}" for i in range(n)]}}


def classifier(records, label_names=("a", "b", "c"), confusion=None) -> ClassificationTask:
    task = ClassificationTask(model=ENCODER, optim={}, num_labels=len(label_names), label_names=list(label_names))
    task.records = records
    task.confusion = {"test": confusion} if confusion else {}
    return task


def make(tmp_path, created="2026-01-01T00:00:00+00:00", wall_s=1.0, records=None, metrics=None):
    records = records or classification_records()
    rec = records["test"]
    acc = float(np.mean(np.array(rec["pred"]) == np.array(rec["label"])))
    csv_file = tmp_path / "metrics.csv"
    csv_file.write_text("epoch,step,train/loss,val/loss,val/acc\n0,9,1.2,,\n0,9,,1.1,0.5\n0,19,0.9,,\n0,19,,1.0,0.6\n")
    task = classifier(records, confusion=[[5, 1, 0], [0, 4, 2], [1, 0, 6]])
    return build_report(
        source="evaluate", kind="classification", task_name="unit",
        metrics=metrics or {"test/test/acc": acc, "test/test/loss": 0.5},
        statistics=task.report_statistics(), scored_examples=task.report_examples(),
        example_counts={"test": len(rec["pred"])}, fingerprints={"test": "ab" * 32}, config={"seed": 1, "data": {"x": 1}},
        provenance={"command": ["python", "x.py"], "git": {"commit": "c0ffee", "dirty": False},
                    "versions": {"torch": "2.13.0"}, "device": {"cpu_count": 2}},
        checkpoint=None, out_dir=tmp_path, settings=SETTINGS, created=created, wall_s=wall_s,
        task_plots=task.report_plots(tmp_path), metrics_csv=csv_file)


def test_same_inputs_same_report_but_for_time(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for out, created, wall in ((one, "2026-01-01T00:00:00+00:00", 1.0), (two, "2026-02-02T10:00:00+00:00", 7.5)):
        out.mkdir()
        write_report(out, make(out, created, wall))
    a, b = json.loads((one / "report.json").read_text()), json.loads((two / "report.json").read_text())
    assert a["created"] != b["created"] and a["wall_s"] != b["wall_s"]
    assert {k: v for k, v in a.items() if k not in VOLATILE_KEYS} == {k: v for k, v in b.items() if k not in VOLATILE_KEYS}
    md_a, md_b = ((d / "report.md").read_text().splitlines() for d in (one, two))
    differ = [i for i, (x, y) in enumerate(zip(md_a, md_b)) if x != y]
    assert len(md_a) == len(md_b) and len(differ) == 1 and md_a[differ[0]].startswith("created ")
    for name in ("learning_curves.png", "confusion_matrix.png"):  # plots: the same bytes
        assert (one / "plots" / name).read_bytes() == (two / "plots" / name).read_bytes()


def test_report_contents(tmp_path):
    report = make(tmp_path)
    ci = report["intervals"]["test/test/acc"]
    assert ci["low"] <= report["metrics"]["test/test/acc"] <= ci["high"] and ci["n"] == 200
    assert abs(ci["estimate"] - report["metrics"]["test/test/acc"]) < 1e-12
    assert set(report["intervals"]) == {"test/test/acc", "test/test/f1_macro"}
    assert report["notes"] == [] and report["examples"] == {"test": 200}
    assert "accuracy" in report["definitions"]["test/test/acc"]
    assert set(report["plots"]) == {"learning curves", "confusion matrix"}
    assert (tmp_path / "plots" / "confusion_matrix.png").stat().st_size > 0
    assert not (tmp_path / "report.md").exists()  # build_report computes, write_report writes
    write_report(tmp_path, report)
    md = (tmp_path / "report.md").read_text()
    assert f"| test/test/acc | {report['metrics']['test/test/acc']:.4f} | [{ci['low']:.4f}, {ci['high']:.4f}] | 200 |" in md
    assert "## Worst examples (test; by probability of the true class)" in md and "c0ffee" in md


def test_a_logged_metric_the_records_do_not_reproduce_is_flagged(tmp_path):
    report, report2 = make(tmp_path), make(tmp_path, metrics={"test/test/acc": 0.01})
    assert report["notes"] == [] and "test/test/acc: the per-example records give" in report2["notes"][0]


def test_extremes_rank_by_the_per_example_score():
    records = {"test": {"pred": [0, 1, 1, 0], "label": [0, 0, 1, 1], "p_true": [0.9, 0.2, 0.6, 0.2],
                        "text": ["a", "b", "c", "d"]}}
    out = extremes(classifier(records, ("neg", "pos")).report_examples(), 2)["test"]
    assert [r["text"] for r in out["worst"]] == ["b", "d"]  # ties keep the data order
    assert [r["text"] for r in out["best"]] == ["a", "c"]
    assert out["worst"][0] == {"score": 0.2, "text": "b", "label": "neg", "predicted": "pos"}


def test_extremes_clip_long_texts_and_collapse_whitespace():
    scored = {"dev": {"score": "s", "scores": [0.5], "rows": [{"text": "a  b\n" + "x" * 400, "refs": ["c   d"]}]}}
    row = extremes(scored, 1)["dev"]["worst"][0]
    assert row["text"].startswith("a b x") and len(row["text"]) == 300 and row["text"].endswith("…")
    assert row["refs"] == ["c d"]


def test_statistics_per_task():
    clm = CausalLMTask(model=GPT, optim={})
    clm.records = {"validation": {"nll": [2.0, 4.0], "tokens": [2, 2]}}
    assert set(clm.report_statistics()) == {"test/validation/ppl"}
    assert clm.report_statistics()["test/validation/ppl"].value() == pytest.approx(np.exp(1.5))
    mlm = MaskedLMTask(model=ENCODER, optim={})
    mlm.records = {"validation": {"nll": [1.0, 1.0], "tokens": [1, 3], "correct": [1, 1]}}
    stats = mlm.report_statistics()
    assert stats["test/validation/masked_acc"].value() == pytest.approx(0.5)
    assert stats["test/validation/ppl"].value() == pytest.approx(np.exp(0.5))
    qa = QuestionAnsweringTask(model=ENCODER, optim={})
    qa.records = {"dev": {"id": ["q1", "q2"], "question": ["?", "?"], "prediction": ["the cat", "dog"],
                          "references": [["cat"], ["a bird"]]}}
    stats = qa.report_statistics()
    assert stats["test/dev/em"].value() == pytest.approx(50.0) and stats["test/dev/f1"].value() == pytest.approx(50.0)
    assert [r["id"] for r in extremes(qa.report_examples(), 1)["dev"]["worst"]] == ["q2"]
    for metric, names in (("bleu", {"test/test/bleu", "test/test/chrf"}),
                          ("rouge", {"test/test/rouge1", "test/test/rouge2", "test/test/rougeL", "test/test/rougeLsum"})):
        s2s = Seq2SeqTask(model=ENCODER_DECODER, optim={}, metric=metric)
        s2s.records = {"test": {"source": ["x"], "prediction": ["a b c d"], "references": [["a b c d"]]}}
        assert set(s2s.report_statistics()) == names
        assert all(stat.value() == pytest.approx(100.0) for stat in s2s.report_statistics().values())
