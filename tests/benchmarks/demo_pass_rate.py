"""Run ``closedloop demo`` over seeds and print its pass rate.

A seed passes when the demo exits 0, a retrained version was promoted and served, and
quality recovered: the new version's mean ROC AUC per chunk on drifted traffic is at
least ``--min-recovery`` above the old version's on the same drifted traffic (read
from the run's ``timeline.json``). Every seed's report stays in ``--out``.

    python tests/benchmarks/demo_pass_rate.py --seeds 0-9
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def seeds(text: str) -> list[int]:
    """``0-9`` or ``0,3,5``."""
    if "-" in text:
        low, high = text.split("-", 1)
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",") if s]


def judge(workdir: Path, min_recovery: float) -> tuple[bool, str]:
    """Whether the run recovered, and one line saying so with numbers."""
    timeline_path = workdir / "timeline.json"
    if not timeline_path.exists():
        return False, "no timeline.json (the demo stopped before its report)"
    timeline = json.loads(timeline_path.read_text())
    drifted = [q for q in timeline["quality"] if "concept" in q["phase"] or "after" in q["phase"]]
    versions = list(dict.fromkeys(q["version"] for q in drifted))
    if len(versions) < 2:
        return (
            False,
            f"only {versions or ['no version']} served drifted traffic: {timeline.get('outcome', '')}",
        )
    old, new = versions[0], versions[-1]

    def mean_auc(version: str) -> float:
        values = [
            q["roc_auc"] for q in drifted if q["version"] == version and q["roc_auc"] is not None
        ]
        return statistics.fmean(values) if values else float("nan")

    before, after = mean_auc(old), mean_auc(new)
    ok = after >= before + min_recovery
    return (
        ok,
        f"ROC AUC on drifted traffic {old} {before:.3f} → {new} {after:.3f}; failed requests {timeline['failed_requests']}",
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0-9", help="Seeds, e.g. 0-9 or 0,4 [default: 0-9].")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "build" / "demo-seeds",
        help="Where each seed's run goes [default: build/demo-seeds].",
    )
    parser.add_argument(
        "--min-recovery",
        type=float,
        default=0.1,
        help="ROC AUC the new version must gain [default: 0.1].",
    )
    parser.add_argument(
        "--timeout", type=float, default=1500.0, help="Seconds per seed [default: 1500]."
    )
    args = parser.parse_args()
    cli = Path(sys.executable).with_name("closedloop")
    results = []
    for seed in seeds(args.seeds):
        workdir = args.out / f"seed-{seed}"
        shutil.rmtree(workdir, ignore_errors=True)
        started = time.monotonic()
        print(f"seed {seed}: running …", flush=True)
        try:
            proc = subprocess.run(
                [str(cli), "demo", "--seed", str(seed), "--workdir", str(workdir)],
                capture_output=True, text=True, timeout=args.timeout, check=False,
            )  # fmt: skip
            rc, tail = proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()[-1:]
        except subprocess.TimeoutExpired:
            rc, tail = -1, [f"timed out after {args.timeout:.0f}s"]
        ok, why = judge(workdir, args.min_recovery)
        passed = rc == 0 and ok
        seconds = time.monotonic() - started
        results.append(passed)
        print(
            f"seed {seed}: {'PASS' if passed else 'FAIL'} in {seconds:.0f}s (rc {rc}); {why}; {' '.join(tail)}",
            flush=True,
        )
    print(f"\npassed {sum(results)} of {len(results)} seeds")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
