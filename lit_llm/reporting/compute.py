"""Comparing runs at equal compute: run.json's `compute` field, the Pareto front of a metric against
training FLOPs, its plot, and how FLOPs are printed.

A run's `compute` (written by `lit_llm.callbacks.SpeedMonitor`) counts analytic training FLOPs over
every micro-batch, so two runs of one model family compare fairly; FLOPs of different formulas (a
backbone's `flops_formula`) are estimates of the same thing, not measurements.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Literal

from lit_llm.reporting.plots import _PNG_METADATA, _pyplot

Direction = Literal["max", "min"]


def compute_of(run_json: dict) -> dict[str, Any] | None:
    """A run's compute accounting (run.json's `compute`); None for runs written before it existed or
    without the SpeedMonitor callback."""
    compute = run_json.get("compute")
    return compute if isinstance(compute, dict) else None


def pretraining_flops(init_from: str | None) -> float | None:
    """Training FLOPs of the lit-llm runs a run starts from (`model.init_from`: a run directory or a checkpoint in
    one), their own starts included; None when any start of the chain is not such a run (a Hugging Face model:
    unknown) or has no compute accounting in its run.json. What a pretrained start cost, for comparisons at equal
    total compute."""
    if not init_from or str(init_from).startswith("hf:"):
        return None
    path = Path(init_from)
    run_dir = path if path.is_dir() else path.parent.parent if path.parent.name == "checkpoints" else path.parent
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    compute = compute_of(meta) if isinstance(meta, dict) else None
    if not compute or not _finite(compute.get("train_flops")):
        return None
    earlier = compute.get("pretraining_flops")
    if meta.get("init_from") and not _finite(earlier):  # a link of the chain is unknown: so is the total
        return None
    return float(compute["train_flops"]) + float(earlier or 0.0)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def pareto_front(points: list[tuple[float, float]], direction: Direction) -> list[int]:
    """Indices of the (compute, metric) points no other point dominates, sorted by compute (then index).

    A point is dominated by one with less or equal compute and a better-or-equal metric (`direction`:
    "max" or "min" is better), strictly better in at least one; equal points do not dominate each other.
    Points with a missing or non-finite coordinate are never on the front.
    """
    if direction not in ("max", "min"):
        raise ValueError(f"direction must be 'max' or 'min', not {direction!r}")
    sign = 1.0 if direction == "max" else -1.0
    valid = [(i, float(c), sign * float(m)) for i, (c, m) in enumerate(points) if _finite(c) and _finite(m)]

    def dominated(c: float, m: float) -> bool:
        return any(c2 <= c and m2 >= m and (c2 < c or m2 > m) for _, c2, m2 in valid)

    return sorted((i for i, c, m in valid if not dominated(c, m)), key=lambda i: (float(points[i][0]), i))


def fmt_flops(x: float | None) -> str:
    """FLOPs in short scientific notation: 3.2e15 ("—" when unknown)."""
    if not _finite(x):
        return "—"
    if x == 0:
        return "0"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def pareto_plot(names: list[str], flops: list[float | None], values: list[float | None], metric: str,
                direction: Direction) -> bytes:
    """PNG of `metric` against training FLOPs (log x), each run a labelled point, the Pareto front a step
    line. Runs without FLOPs (or with none > 0) or without a value are left out."""
    plt = _pyplot()
    keep = [i for i in range(len(names)) if _finite(flops[i]) and flops[i] > 0 and _finite(values[i])]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if keep:
        xs, ys = [float(flops[i]) for i in keep], [float(values[i]) for i in keep]
        ax.scatter(xs, ys, s=18, color="tab:blue", zorder=3)
        front = pareto_front(list(zip(xs, ys)), direction)
        for k in front:  # only the front is labelled (a sweep's runs would pile up), by the run's own directory name
            ax.annotate(Path(str(names[keep[k]])).name, (xs[k], ys[k]), xytext=(3, 3), textcoords="offset points",
                        fontsize=6)
        if front:
            ax.step([xs[k] for k in front], [ys[k] for k in front], where="post", color="tab:red", lw=1.2,
                    label="Pareto front", zorder=2)
            ax.legend(fontsize=7, loc="best")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # minor labels (3e12, 4e12 ...) overlap on a short axis
    else:
        ax.text(0.5, 0.5, "no runs with training FLOPs", ha="center", va="center", transform=ax.transAxes)
    better = "higher" if direction == "max" else "lower"
    ax.set_xlabel("training FLOPs (analytic)")
    ax.set_ylabel(f"{metric} ({better} is better)")
    ax.set_title(f"{metric} against training compute", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata=_PNG_METADATA)
    plt.close(fig)
    return buf.getvalue()


__all__ = ["compute_of", "pareto_front", "pareto_plot", "fmt_flops"]
