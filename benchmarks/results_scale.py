"""Results scale: write, compact, status, fit and a resume's read at 1,000 / 5,000 / 20,000
recorded trials, with the peak memory of each command.

    .venv/bin/python benchmarks/results_scale.py [--sizes 1000,5000,20000] [--baseline-size 1000]

Rows come from real plans (benchmarks/orchestrator_scale.py's) with synthetic losses that
have an optimum in lr and B per cell, written through the real ResultSink as the driver
writes them (parts of RESULT_BUFFER_TRIALS trials), then compacted as a finished sweep is.
``sweeper status --json`` and ``sweeper fit --no-plots`` run as the user runs them, each in
its own process (wall seconds, and peak RSS from wait4); a resume's start-up read
(sweep.recorded_results) is timed inside its own process. ``status`` is also timed on the
uncompacted parts (what it reads while a sweep runs).

The baseline, measured in the same run: the previous layout (one part file per trial) at
``--baseline-size`` trials. The last line printed is one JSON object with every figure.

Targets at 20,000 trials: status and fit each <= 3 s and <= 500 MB peak RSS; resume read <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator_scale import outcome, plan

from sweeper.plan import TrialSpec
from sweeper.results import ResultSink, compact_run
from sweeper.sweep import RESULT_BUFFER_TRIALS


def loss_of(spec: TrialSpec) -> float:
    """A smooth landscape: optimum lr 1e-2 (N/1e4)^-0.3, optimum B 64 tokens, plus a floor
    that falls with N and D; deterministic (no noise), so every size fits the same laws."""
    n, d = spec.shape.n_params_nonembedding, spec.tokens_budget
    best_lr = 1e-2 * (n / 1e4) ** -0.3
    floor = 2.0 + 5.0 * n**-0.2 + 20.0 * d**-0.2
    return floor + 0.05 * math.log(spec.lr / best_lr) ** 2 + 0.03 * math.log(spec.batch_size_tokens / 64) ** 2


def write(folder: Path, specs: list[TrialSpec], per_part: int) -> float:
    sink = ResultSink(folder, max_buffered=per_part)
    started = time.time()
    for spec in specs:
        result = outcome(spec)
        result.final_val_loss = loss_of(spec)
        sink.record(spec, result)
    sink.flush()
    return time.time() - started


def run_measured(command: list[str]) -> dict:
    """Wall and CPU seconds and peak RSS (MB) of one child process (start-up included);
    its stdout's last line too."""
    started = time.time()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.time() - started
    stdout, stderr = child.stdout.read(), child.stderr.read()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} exited {child.returncode}: {stderr[-500:]}")
    last = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "last_line": last,
    }


RESUME_READ = (
    "import sys, time; from sweeper.sweep import recorded_results; started = time.time(); "
    "finished, failed, problems = recorded_results(sys.argv[1]); "
    "print(len(finished), round(time.time() - started, 3))"
)


def measure_folder(folder: Path, fit: bool) -> dict:
    figures: dict = {}
    status = run_measured([sys.executable, "-m", "sweeper", "status", str(folder), "--json"])
    figures["status"] = {k: v for k, v in status.items() if k != "last_line"}
    resume = run_measured([sys.executable, "-c", RESUME_READ, str(folder)])
    count, seconds = resume["last_line"].split()
    figures["resume_read"] = {
        "read_s": float(seconds),
        "trials": int(count),
        "peak_rss_mb": resume["peak_rss_mb"],
    }
    if fit:
        result = run_measured([sys.executable, "-m", "sweeper", "fit", str(folder), "--no-plots"])
        figures["fit"] = {k: v for k, v in result.items() if k != "last_line"}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--baseline-size", type=int, default=1000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    figures: dict = {}
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "baseline"
        specs = plan(args.baseline_size)
        baseline = {"size": args.baseline_size, "write_s": round(write(folder, specs, 1), 3)}
        baseline.update(measure_folder(folder, fit=False))
        baseline["bytes"] = sum(p.stat().st_size for p in folder.rglob("*.parquet"))
        figures["baseline_one_file_per_trial"] = baseline
        print(f"baseline {args.baseline_size}: {baseline}", flush=True)
        for size in sizes:
            folder = Path(root) / f"run{size}"
            specs = plan(size)
            row: dict = {"write_s": round(write(folder, specs, RESULT_BUFFER_TRIALS), 3)}
            row["status_uncompacted"] = measure_folder(folder, fit=False)["status"]
            started = time.time()
            compact_run(folder)
            row["compact_s"] = round(time.time() - started, 3)
            row["bytes"] = sum(p.stat().st_size for p in folder.rglob("*.parquet"))
            row.update(measure_folder(folder, fit=True))
            figures[str(size)] = row
            print(f"{size:>6}: {row}", flush=True)
    first = str(sizes[0])
    if args.baseline_size == sizes[0]:
        figures["status_baseline_over_compacted"] = round(
            figures["baseline_one_file_per_trial"]["status"]["wall_s"] / figures[first]["status"]["wall_s"], 2
        )
        figures["resume_read_baseline_over_compacted"] = round(
            figures["baseline_one_file_per_trial"]["resume_read"]["read_s"]
            / max(1e-3, figures[first]["resume_read"]["read_s"]),
            2,
        )
    last = figures[str(sizes[-1])]
    figures["meets_targets_at_largest"] = {
        "status": last["status"]["wall_s"] <= 3 and last["status"]["peak_rss_mb"] <= 500,
        "fit": last["fit"]["wall_s"] <= 3 and last["fit"]["peak_rss_mb"] <= 500,
        "resume_read": last["resume_read"]["read_s"] <= 2,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
