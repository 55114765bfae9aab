"""report.json / report.md: deterministic, intervals around the logged metrics, worst/best examples."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lit_llm.reporting.report import VOLATILE_KEYS, build_report, extremes, statistics, write_report

SETTINGS = {"resamples": 500, "confidence": 0.95, "seed": 0, "examples": 2}


def classification_records(n=200, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.7, label, rng.integers(0, 3, n))
    return {"test": {"pred": pred.tolist(), "label": label.tolist(), "p_true": rng.random(n).round(6).tolist(),
                     "text": [f"sentence {i}" for i in range(n)]}}


def make(tmp_path, created="2026-01-01T00:00:00+00:00", wall_s=1.0, records=None):
    records = records or classification_records()
    rec = records["test"]
    acc = float(np.mean(np.array(rec["pred"]) == np.array(rec["label"])))
    csv_file = tmp_path / "metrics.csv"
    csv_file.write_text("epoch,step,train/loss,val/loss,val/acc\n0,9,1.2,,\n0,9,,1.1,0.5\n0,19,0.9,,\n0,19,,1.0,0.6\n")
    return build_report(
        source="evaluate", kind="classification", task_name="unit", metrics={"test/acc": acc, "test/loss": 0.5},
        records=records, fingerprints={"test": "ab" * 32}, config={"seed": 1, "data": {"x": 1}},
        provenance={"command": ["python", "x.py"], "git": {"commit": "c0ffee", "dirty": False},
                    "versions": {"torch": "2.13.0"}, "device": {"cpu_count": 2}},
        checkpoint=None, out_dir=tmp_path, settings=SETTINGS, created=created, wall_s=wall_s, num_labels=3,
        label_names=["a", "b", "c"], confusion=[[5, 1, 0], [0, 4, 2], [1, 0, 6]], metrics_csv=csv_file)


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
    ci = report["intervals"]["test/acc"]
    assert ci["low"] <= report["metrics"]["test/acc"] <= ci["high"] and ci["n"] == 200
    assert abs(ci["estimate"] - report["metrics"]["test/acc"]) < 1e-12
    assert set(report["intervals"]) == {"test/acc", "test/f1_macro"}
    assert report["notes"] == [] and report["examples"] == {"test": 200}
    assert "accuracy" in report["definitions"]["test/acc"]
    assert set(report["plots"]) == {"learning curves", "confusion matrix"}
    assert not (tmp_path / "report.md").exists()  # build_report computes, write_report writes
    write_report(tmp_path, report)
    md = (tmp_path / "report.md").read_text()
    assert f"| test/acc | {report['metrics']['test/acc']:.4f} | [{ci['low']:.4f}, {ci['high']:.4f}] | 200 |" in md
    assert "## Worst examples (test; by probability of the true class)" in md and "c0ffee" in md


def test_a_logged_metric_the_records_do_not_reproduce_is_flagged(tmp_path):
    report = make(tmp_path)
    report2 = build_report(**{**_args(tmp_path), "metrics": {"test/acc": 0.01}})
    assert report["notes"] == [] and "test/acc: the per-example records give" in report2["notes"][0]


def _args(tmp_path):
    return dict(source="train", kind="classification", task_name="unit", records=classification_records(),
                fingerprints={}, config={}, provenance={}, checkpoint=None, out_dir=tmp_path, settings=SETTINGS,
                created="x", wall_s=0.0, num_labels=3)


def test_extremes_rank_by_the_per_example_score():
    records = {"test": {"pred": [0, 1, 1, 0], "label": [0, 0, 1, 1], "p_true": [0.9, 0.2, 0.6, 0.2],
                        "text": ["a", "b", "c", "d"]}}
    out = extremes("classification", records, 2, ["neg", "pos"])["test"]
    assert [r["text"] for r in out["worst"]] == ["b", "d"]  # ties keep the data order
    assert [r["text"] for r in out["best"]] == ["a", "c"]
    assert out["worst"][0] == {"score": 0.2, "text": "b", "label": "neg", "predicted": "pos"}


def test_statistics_per_task():
    clm = statistics("clm", {"heldout": {"nll": [2.0, 4.0], "tokens": [2, 2]}})
    assert clm["test/heldout/ppl"].value() == pytest.approx(np.exp(1.5))
    mlm = statistics("mlm", {"heldout": {"nll": [1.0, 1.0], "tokens": [1, 3], "correct": [1, 1]}})
    assert mlm["test/masked_acc"].value() == pytest.approx(0.5) and mlm["test/ppl"].value() == pytest.approx(np.exp(0.5))
    qa = statistics("qa", {"dev": {"prediction": ["the cat", "dog"], "references": [["cat"], ["a bird"]]}})
    assert qa["test/dev/em"].value() == pytest.approx(50.0) and qa["test/dev/f1"].value() == pytest.approx(50.0)
    s2s = statistics("seq2seq", {"test": {"prediction": ["a b c d"], "references": [["a b c d"]]}}, metric="bleu")
    assert s2s["test/bleu"].value() == pytest.approx(100.0) and set(s2s) == {"test/bleu", "test/chrf"}
    rouge = statistics("seq2seq", {"test": {"prediction": ["a b"], "references": [["a b"]]}}, metric="rouge")
    assert set(rouge) == {"test/rouge1", "test/rouge2", "test/rougeL", "test/rougeLsum"}
