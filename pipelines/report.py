"""Compare runs: python pipelines/report.py <multirun dir | run dirs ...> [--out DIR] [--paired] [--baseline K=V]

Writes leaderboard.md (+ leaderboard.png, embedded) and leaderboard.csv: one row per run, sorted by the
optimised metric; lit_llm/reporting/leaderboard.py says what goes in them.
"""
import argparse
import sys
from pathlib import Path

from lit_llm.errors import cli_errors
from lit_llm.reporting import leaderboard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pipelines/report.py", description=__doc__.split("\n\n")[0],
        epilog="Run directories are found at or below the given paths (a directory with run.json or "
               ".hydra/overrides.yaml). Overrides equal in every run go into a header line, the others "
               "become columns; runs that differ only by seed get mean ± std; failed runs are listed but "
               "left out of the statistics. Exit status 2 when a path does not exist or no run completed.")
    parser.add_argument("paths", nargs="+", type=Path, help="a multirun directory, or run directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write leaderboard.{md,csv,png}; default: the directory given, or with "
                             "several paths, their deepest common parent directory")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated metric names or patterns for the markdown columns, e.g. "
                             "'val/acc,test/*' (default: val/* and test/*, without per-class */f1/<label>); "
                             "the csv always has every metric")
    parser.add_argument("--direction", choices=["max", "min"], default=None,
                        help="sort order of the optimised metric (default: the Optuna sweeper's direction, "
                             "else from the name: acc/f1/em/bleu/rouge* max, loss/ppl min)")
    parser.add_argument("--paired", action="store_true",
                        help="the paths hold two runs (or two seed groups): compare them on every metric, paired "
                             "over the test examples; refused (exit status 2) when they were not tested on the "
                             "same examples (different test fingerprints in report.json)")
    parser.add_argument("--baseline", default=None, metavar="KEY=VALUE",
                        help="compare every run (or seed group) with the one equal to it but for KEY=VALUE, "
                             "e.g. --baseline start=scratch")
    parser.add_argument("--paired-metric", default=None,
                        help="the metric of the 'against the best' tests (default: the test metric named like "
                             "the optimised one, e.g. test/test/acc for val/acc)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the paired tests")
    parser.add_argument("--seed", type=int, default=0, help="seed of the paired tests' resampling")
    args = parser.parse_args(argv)
    with cli_errors():  # nothing to compare (leaderboard.NoRuns), unpaired runs: one line, exit status 2
        board = leaderboard.build(args.paths, metrics=args.metrics.split(",") if args.metrics else None,
                                  direction=args.direction)
        leaderboard.add_comparisons(board, {"resamples": args.resamples, "confidence": 0.95, "seed": args.seed},
                                    metric=args.paired_metric, baseline=args.baseline, paired=args.paired,
                                    order=args.paths)
    out = args.out or (args.paths[0] if len(args.paths) == 1 else board.root)
    files = leaderboard.write(board, out)
    done = sum(r.completed for r in board.runs)
    print(f"{len(board.runs)} runs ({done} completed) -> " + ", ".join(str(p) for p in files.values()))
    best = next((r for r in board.runs if r.value(board.metric) is not None), None)
    if best is not None and board.direction:
        print(f"best {board.metric}: {leaderboard.fmt(best.value(board.metric))} ({best.name})")
    for line in leaderboard.comparison_lines(board):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
