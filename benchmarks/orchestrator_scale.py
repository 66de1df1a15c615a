"""Orchestrator scale: CPU seconds per scheduled trial at 1,000 / 5,000 / 20,000 trials.

    .venv/bin/python benchmarks/orchestrator_scale.py [--sizes 1000,5000,20000] [--postgres-max 5000]
    .venv/bin/python benchmarks/orchestrator_scale.py --sizes '' --ray-trials 100   # the Ray figure alone

With a fake executor that finishes every trial at once (so only sweeper's own cost is
left), it measures for each plan size:

- ``schedule``: the real SweepStudy choosing every trial and telling Optuna (in batches of
  RESULT_BUFFER_TRIALS, as the driver does), on the default journal file, on Optuna's
  in-memory storage, and on a PostgreSQL server it starts (when one can be started; up to
  ``--postgres-max`` trials, as each trial is a few SQL statements);
- ``driver``: the whole driver loop (sweep._drive) with the real study on the journal and
  the real ResultSink (buffered parts), then the compaction a finished sweep does;
- ``ray`` (``--ray-trials``): that many one-step trials through run_sweep on a real local
  Ray, ``--ray-repeats`` times on one cluster, in wall seconds from ``on_start`` to the end;
  the first sweep meets fresh workers (cold), the later ones reuse them (warm). Its baseline
  is as many empty ray.remote tasks on the same cluster.

The baseline, measured in the same run: the previous scheduler (Optuna's BruteForceSampler,
one ask and one tell per trial, in memory) at ``--baseline-size`` trials. Figures are CPU
seconds of this process (time.process_time), which machine load changes less than wall
time; the last line printed is one JSON object with every figure.

Targets: a 20,000-trial plan scheduled and told in <= 60 CPU s on the journal, and the cost
per trial at 20,000 within 2x of the cost at 1,000.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution

from sweeper.outcome import CurvePoint, TrialOutcome, TrialStatus
from sweeper.plan import TrialSpec, plan_trials
from sweeper.recipe import parse_recipe
from sweeper.results import ResultSink, compact_run
from sweeper.schedule import SweepStudy
from sweeper.sweep import RESULT_BUFFER_SECONDS, RESULT_BUFFER_TRIALS, SweepSummary, _drive


def plan(size: int) -> list[TrialSpec]:
    """4 model sizes x 5 token budgets x 5 batch sizes x size/100 learning rates."""
    lrs = max(1, size // 100)
    recipe = parse_recipe(
        {
            "name": f"scale{size}",
            "models": [{"d_model": d, "n_layers": 1, "n_heads": 2, "seq_len": 16} for d in (16, 32, 48, 64)],
            "tokens": {"absolute": [4096 * 2**i for i in range(5)]},
            "learning_rates": {"grid": {"min": 1e-4, "max": 1e-1, "count": lrs}},
            "batch_sizes": [4, 8, 16, 32, 64],
        }
    )
    return plan_trials(recipe, "bench")


def outcome(spec: TrialSpec) -> TrialOutcome:
    """A finished trial with a 4-point curve (a curve of a real trial is this or longer)."""
    loss = 3.0 + abs(spec.lr - 3e-3) * 10
    now = time.time()
    return TrialOutcome(
        trial_id=spec.trial_id,
        status="complete",
        final_val_loss=loss,
        smoothed_train_loss=loss,
        steps_done=4,
        tokens_done=4 * spec.batch_size_tokens,
        wall_seconds=0.0,
        started_at=now,
        ended_at=now,
        curve=[
            CurvePoint(
                step=i + 1, tokens=(i + 1) * spec.batch_size_tokens, lr=spec.lr, train_loss=loss + 1 - i / 4
            )
            for i in range(4)
        ],
    )


class InstantExecutor:
    """TrialExecutor's interface; every submitted trial is finished at the next wait."""

    def __init__(self, slots: int = 64):
        self.slots = slots
        self.in_flight: dict[int, list[TrialSpec]] = {}
        self._next = 0

    def capacity(self) -> int:
        return self.slots

    def submit(self, specs: list[TrialSpec]) -> None:
        self.in_flight[self._next] = list(specs)
        self._next += 1

    def in_flight_trials(self) -> list[TrialSpec]:
        return [spec for group in self.in_flight.values() for spec in group]

    def where(self) -> dict[str, dict]:
        return {}

    def live(self) -> dict[str, dict]:
        return {}

    def wait(self, timeout: float | None = None) -> list[tuple[TrialSpec, TrialOutcome]]:
        done = [(spec, outcome(spec)) for group in self.in_flight.values() for spec in group]
        self.in_flight.clear()
        return done


def cpu(work) -> float:  # noqa: ANN001
    started = time.process_time()
    work()
    return time.process_time() - started


def schedule_all(study: SweepStudy, specs: list[TrialSpec], marks: list[float]) -> None:
    """Ask and tell every trial as the driver does; ``marks`` gets the CPU time at each
    tenth of the plan (the last tenth's cost per trial shows any growth with n)."""
    runnable = {spec.trial_id for spec in specs}
    step = max(1, len(specs) // 10)
    done = 0
    marks.append(time.process_time())
    while (asked := study.next_trial(runnable)) is not None:
        runnable.discard(asked.spec.trial_id)
        study.tell(asked, outcome(asked.spec))
        done += 1
        if study.unsent >= RESULT_BUFFER_TRIALS:
            study.flush()
        if done % step == 0:
            marks.append(time.process_time())
    study.flush()
    marks.append(time.process_time())


def measure_schedule(specs: list[TrialSpec], storage: str, folder: Path, url: str | None) -> dict:
    if storage == "memory":
        study = SweepStudy(optuna.create_study(direction="minimize"), specs)
    else:
        study = SweepStudy.open(f"bench{len(specs)}-{storage}", specs, folder, storage_url=url)
    marks: list[float] = []
    schedule_all(study, specs, marks)
    total = marks[-1] - marks[0]
    last_tenth = (marks[-2] - marks[-3]) / max(1, len(specs) // 10)
    return {
        "cpu_s": round(total, 3),
        "ms_per_trial": round(1e3 * total / len(specs), 4),
        "last_tenth_ms_per_trial": round(1e3 * last_tenth, 4),
    }


def measure_driver(specs: list[TrialSpec], folder: Path) -> dict:
    study = SweepStudy.open(f"driver{len(specs)}", specs, folder)
    sink = ResultSink(folder, max_buffered=RESULT_BUFFER_TRIALS, max_buffer_seconds=RESULT_BUFFER_SECONDS)
    summary = SweepSummary(folder, planned=len(specs), already_recorded=0)
    pending = {spec.trial_id for spec in specs}
    wall = time.time()
    drive = cpu(
        lambda: _drive(
            study,
            InstantExecutor(),
            sink,
            pending,
            summary,
            None,
            lambda spec: 1,
            {},
            TrialStatus.COMPLETE,
            "bench",
        )
    )
    compact = cpu(lambda: compact_run(folder))
    wall = time.time() - wall
    assert summary.counts == Counter({"complete": len(specs)}), summary.counts
    return {
        "cpu_s": round(drive, 3),
        "ms_per_trial": round(1e3 * drive / len(specs), 4),
        "compact_cpu_s": round(compact, 3),
        "wall_s": round(wall, 3),
    }


class _GridInAskTell(optuna.samplers.BruteForceSampler):
    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001 (no study.stop here)
        return None


def measure_baseline(size: int) -> dict:
    """The previous scheduler: BruteForceSampler, one ask + tell per trial, in memory."""
    specs = plan(size)
    distributions = {
        "cell": CategoricalDistribution(sorted({s.cell_id for s in specs})),
        "lr": CategoricalDistribution(sorted({s.lr for s in specs})),
        "batch_size": CategoricalDistribution(sorted({s.batch_size for s in specs})),
        "seed": CategoricalDistribution(sorted({s.seed for s in specs})),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(sampler=_GridInAskTell(seed=0), direction="minimize")

    def run() -> None:
        for _ in range(len(specs)):
            trial = study.ask(distributions)
            trial.set_user_attr("trial_id", "x")
            trial.set_user_attr("status", "complete")
            study.tell(trial, 3.0)

    total = cpu(run)
    return {"size": size, "cpu_s": round(total, 3), "ms_per_trial": round(1e3 * total / size, 4)}


def measure_ray(trials: int, repeats: int = 3) -> dict:
    """``trials`` one-step trials through the real driver (run_sweep) on a local Ray, timed
    from the moment Ray is up (``on_start``) to the last result, ``repeats`` times (a new run
    folder each time); the baseline is as many empty ray.remote tasks on the same cluster,
    measured before each sweep. Ray is started as a sweep starts it (sweeper's ``connect``:
    dashboard, state API and the live-progress board all on), on 2 CPUs. Wall seconds: this
    is about latency, not CPU; the load average is printed alongside."""
    import ray

    from sweeper.execute import connect, disconnect
    from sweeper.recipe import parse_recipe as parse
    from sweeper.sweep import run_sweep

    recipe = parse(
        {
            "name": "ray-overhead",
            "models": [{"d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 16}],
            "tokens": {"absolute": [64]},  # one step of 4 sequences of 16 tokens
            "learning_rates": {"grid": {"min": 1e-4, "max": 1e-1, "count": trials}},
            "batch_sizes": [4],
            "evaluation": {"every_steps": 0, "val_batches": 1},
            "data": {"source": "builtin", "max_bytes": 100000},
            "resources": {"cpus": 1},
            "fuse": "off",
        }
    )
    sweeps, plains, completes = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        connect(num_cpus=2)
        try:

            @ray.remote(num_cpus=1)
            def empty() -> int:
                return 0

            ray.get([empty.remote() for _ in range(4)])  # workers up
            for repeat in range(repeats):
                started = time.time()
                ray.get([empty.remote() for _ in range(trials)])
                plains.append(time.time() - started)
                marks: dict[str, float] = {}
                summary = run_sweep(
                    recipe,
                    Path(folder) / f"run{repeat}",
                    on_start=lambda planned, pending, url: marks.setdefault("up", time.time()),
                )
                sweeps.append(time.time() - marks["up"])
                completes.append(summary.counts.get("complete", 0))
        finally:
            disconnect()
    return {
        "trials": trials,
        "complete": completes,
        "sweeper_trials_per_s": [round(trials / s, 2) for s in sweeps],
        "plain_ray_tasks_per_s": [round(trials / s, 2) for s in plains],
        # The first sweep's workers are fresh: each imports torch, and torch.optim's first
        # use imports torch._dynamo (seconds, once per worker process); later sweeps reuse them.
        "cold_trials_per_s": round(trials / sweeps[0], 2),
        "warm_trials_per_s_median": round(trials / sorted(sweeps[1:])[len(sweeps[1:]) // 2], 2)
        if len(sweeps) > 1
        else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def scheduling_figures(sizes: list[int], postgres_max: int, baseline_size: int) -> dict:
    """The scheduling and driver-loop figures at each plan size, with their baseline."""
    from tests.postgres import postgres_server, unavailable

    postgres_reason = unavailable()
    figures: dict = {"baseline_bruteforce": measure_baseline(baseline_size)}
    print(
        f"baseline (BruteForceSampler ask+tell, memory) at {baseline_size}: "
        f"{figures['baseline_bruteforce']['ms_per_trial']:.3f} ms/trial",
        flush=True,
    )
    server = postgres_server() if postgres_reason is None else None
    url = server.__enter__() if server is not None else None
    try:
        for size in sizes:
            specs = plan(size)
            row: dict = {}
            with tempfile.TemporaryDirectory() as folder:
                row["schedule_journal"] = measure_schedule(specs, "journal", Path(folder), None)
                row["schedule_memory"] = measure_schedule(specs, "memory", Path(folder), None)
                if url is not None and size <= postgres_max:
                    row["schedule_postgres"] = measure_schedule(specs, "postgres", Path(folder), url)
            with tempfile.TemporaryDirectory() as folder:
                row["driver"] = measure_driver(specs, Path(folder))
            figures[str(size)] = row
            for name, value in row.items():
                print(f"{size:>6} {name:<18} {value}", flush=True)
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    first, last = str(sizes[0]), str(sizes[-1])
    base = figures["baseline_bruteforce"]["ms_per_trial"]
    figures["postgres"] = "measured" if url is not None else f"not measured: {postgres_reason}"
    figures["journal_growth_last_vs_first"] = round(
        figures[last]["schedule_journal"]["ms_per_trial"]
        / figures[first]["schedule_journal"]["ms_per_trial"],
        3,
    )
    figures["baseline_over_journal_at_first"] = round(
        base / figures[first]["schedule_journal"]["ms_per_trial"], 2
    )
    figures["meets_60s_at_largest"] = figures[last]["schedule_journal"]["cpu_s"] <= 60
    figures["meets_2x_growth"] = figures["journal_growth_last_vs_first"] <= 2
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000,20000", help="plan sizes ('': only the Ray figure)")
    parser.add_argument("--postgres-max", type=int, default=5000, help="largest plan run on PostgreSQL")
    parser.add_argument("--baseline-size", type=int, default=1000)
    parser.add_argument(
        "--ray-trials", type=int, default=100, help="one-step trials on a real local Ray (0: skip)"
    )
    parser.add_argument("--ray-repeats", type=int, default=3, help="sweeps of --ray-trials, each timed")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    figures: dict = scheduling_figures(sizes, args.postgres_max, args.baseline_size) if sizes else {}
    if args.ray_trials:
        figures["ray"] = measure_ray(args.ray_trials, args.ray_repeats)
        print(f"ray: {figures['ray']}", flush=True)
        figures["meets_30_trials_per_s_cold"] = figures["ray"]["cold_trials_per_s"] >= 30
        warm = figures["ray"]["warm_trials_per_s_median"]
        figures["meets_30_trials_per_s_warm"] = warm is not None and warm >= 30
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
