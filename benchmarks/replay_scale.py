"""Replay scale: CPU seconds of `sweeper replay TABLE --search grid` at 1,000 / 5,000 / 20,000 runs.

    .venv/bin/python benchmarks/replay_scale.py [--sizes 1000,5000,20000]

For each size it writes a synthetic table in Step Law's CSV layout (what `sweeper import
steplaw` reads) into a temporary folder: size/100 cells (model size N x token budget D),
each a 10 x 10 grid of learning rates and batch sizes around a smooth optimum, with the
highest lr at the smallest batch diverged (loss inf), as real tables have. It then runs, as
separate processes, exactly what a user types:

- ``replay``: ``python -m sweeper replay TABLE --out DIR --search grid``: the whole driver
  (plan from the table, the grid's study on the default journal, the result sink,
  compaction), every run of the table answered from it;
- the baseline, ``import``: ``python -m sweeper import steplaw TABLE --out DIR``, the cost of
  reading the same table into a run folder at all (start-up included).

Figures are CPU seconds of the child process (user + system, from os.wait4), wall seconds
and its peak RSS; ``per_run_ms`` is replay CPU per run, ``growth`` the per-run cost at each
size over the first size's, and ``over_import`` replay CPU over the baseline's. The last line
printed is one JSON object with every figure.

Target: the 20,000-run replay in <= 90 CPU s.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LRS, BATCHES = 10, 10  # one cell's grid: as Step Law's dense cells, ~100 runs each


def write_table(path: Path, runs: int) -> int:
    """A Step Law-layout CSV of ``runs`` runs (rounded down to whole cells); returns the count."""
    cells = max(1, runs // (LRS * BATCHES))
    written = 0
    with open(path, "w", newline="") as stream:
        table = csv.writer(stream)
        table.writerow(["seq_len", "lr", "bs", "N", "D", "loss", "smooth loss"])
        for cell in range(cells):
            n_params, tokens = 1e8 * (1 + cell % 20), 2e9 * (1 + cell // 20)
            best_lr = 1e-3 * (n_params / 1e8) ** -0.3
            for i in range(LRS):
                lr = 1e-4 * 2 ** (i / 2)
                for j in range(BATCHES):
                    batch = 32 * (j + 1)
                    loss = 2.5 + 0.1 * math.log(lr / best_lr) ** 2 + 0.05 * math.log(batch / 128) ** 2
                    if i == LRS - 1 and j == 0:
                        loss = math.inf
                    table.writerow([2048, f"{lr:.4e}", batch, int(n_params), int(tokens), loss, loss])
                    written += 1
    return written


def run(command: list[str]) -> dict:
    """Run ``command``; its CPU seconds, wall seconds, peak RSS and last output line."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    started = time.time()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}):\n{output[-2000:]}")
    return {
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "wall_s": round(time.time() - started, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),  # kilobytes on Linux
        "said": output.strip().splitlines()[-1] if output.strip() else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000,20000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    sweeper = [sys.executable, "-m", "sweeper"]
    figures: dict = {}
    for size in sizes:
        with tempfile.TemporaryDirectory() as folder:
            table = Path(folder) / f"steplaw{size}.csv"
            runs = write_table(table, size)
            baseline = run([*sweeper, "import", "steplaw", str(table), "--out", f"{folder}/imported"])
            replay = run([*sweeper, "replay", str(table), "--out", f"{folder}/replayed", "--search", "grid"])
            if f"{runs} of {runs} recorded runs" not in replay["said"]:
                raise SystemExit(f"replay did not run every run of the table: {replay['said']}")
            journal = Path(folder) / "replayed" / "optuna.journal"
            replay["journal_mb"] = round(journal.stat().st_size / 2**20, 1)
        replay["per_run_ms"] = round(1e3 * replay["cpu_s"] / runs, 3)
        replay["over_import"] = round(replay["cpu_s"] / baseline["cpu_s"], 2)
        figures[str(size)] = {"runs": runs, "replay": replay, "import": baseline}
        print(f"{runs:>6} runs  replay {replay}  import {baseline}", flush=True)
    first = figures[str(sizes[0])]["replay"]["per_run_ms"]
    for size in sizes:
        figures[str(size)]["replay"]["growth"] = round(figures[str(size)]["replay"]["per_run_ms"] / first, 2)
    largest = figures[str(sizes[-1])]
    figures["meets_90s_at_20000"] = largest["runs"] >= 20_000 and largest["replay"]["cpu_s"] <= 90
    figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
