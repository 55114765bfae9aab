"""Re-run a training run from its own record and compare: python pipelines/reproduce.py <run dir | report.json>

Checks the code (the run's git commit, and its git.diff when the tree was dirty), then the data (fingerprint,
before anything trains), trains again on the run's resolved config, and prints one verdict line: identical,
consistent, differs or failed. lit_llm/reproduce.py says what each check means.
"""
import argparse
import sys
from pathlib import Path

from lit_llm.errors import cli_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pipelines/reproduce.py", description=__doc__.split("\n\n")[0],
        epilog="Verdicts: identical (metrics.json equal to the last bit: expected from a seeded CPU run, or a GPU "
               "run with trainer.deterministic=true, on the same machine kind and package versions), consistent "
               "(otherwise: every test/* metric inside the original's 95%% interval from report.json), differs, "
               "failed. Exit status 0 for identical or consistent; 1 for differs, failed or a refusal (other "
               "code, changed data, nothing to judge by: nothing is trained); 2 for a bad path. The comparison "
               "is written to <new run>/reproduce.json.")
    parser.add_argument("run", type=Path, help="the run directory of pipelines/train.py, or its report.json")
    parser.add_argument("--out", type=Path, default=None,
                        help="the new run's directory (default: outputs/reproduce/<time>, not under the original "
                             "run, where pipelines/report.py would take it for another job of its sweep)")
    parser.add_argument("--apply-diff", action="store_true",
                        help="when the run was made with uncommitted changes and the working tree is clean at its "
                             "commit: git apply <run>/git.diff first (it stays applied; git apply -R undoes it)")
    args = parser.parse_args(argv)
    from lit_llm.reproduce import Refused, reproduce

    with cli_errors():  # a bad path or record: one line, exit status 2
        try:
            result = reproduce(args.run, args.out, apply_diff=args.apply_diff)
        except Refused as e:
            print(f"refused: {e}", file=sys.stderr, flush=True)
            return 1
    print(result["line"], flush=True)
    return 0 if result["verdict"] in ("identical", "consistent") else 1


if __name__ == "__main__":
    sys.exit(main())
