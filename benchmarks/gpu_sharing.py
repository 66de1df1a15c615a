"""Trials sharing one GPU: what a recipe's fractional ``resources.gpus`` buys.

Ray places a trial that asks for ``gpus: 1/P`` beside P-1 others on the same device (it only
sets CUDA_VISIBLE_DEVICES; the processes share the GPU as CUDA schedules them). This
measures that directly, without Ray: P worker processes, each running the real trainer
(``sweeper.train.run_trial``, bf16 autocast) on the same small proxy, started together; the
figure is the aggregate tokens/s of P processes over that of one, measured in the same run.

    python benchmarks/gpu_sharing.py --shares 1,2,4,8     # about a minute on an H100/H200

Small proxies leave most of a large GPU idle (kernel launches dominate), so sharing should
raise the aggregate throughput until the GPU or the host's cores saturate. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeper.plan import TrialSpec, plan_trials  # noqa: E402
from sweeper.recipe import parse_recipe  # noqa: E402
from sweeper.train import data_identity, run_trial  # noqa: E402

SEQ_LEN, BATCH = 64, 16


def make_spec(d_model: int, steps: int) -> TrialSpec:
    recipe = parse_recipe(
        {
            "name": "share",
            "models": [
                {"d_model": d_model, "n_layers": 2, "n_heads": max(1, d_model // 16), "seq_len": SEQ_LEN}
            ],
            "tokens": {"absolute": [steps * BATCH * SEQ_LEN]},
            "learning_rates": {"values": [1e-3]},
            "batch_sizes": [BATCH],
            "evaluation": {"val_batches": 1},
        }
    )
    return plan_trials(recipe, data_identity(recipe.data))[0]


def worker(spec: TrialSpec, device: str, start: mp.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    run_trial(spec, threads=1, device=device)  # warm-up: CUDA context, kernels, corpus
    start.wait()
    began = time.perf_counter()
    outcome = run_trial(spec, threads=1, device=device)
    out.put((began, time.perf_counter(), outcome.status))


def aggregate(spec: TrialSpec, processes: int, device: str) -> float:
    """Aggregate tokens/s of ``processes`` concurrent trainings, first start to last end."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(spec, device, start, out)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    time.sleep(1.0)
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    assert all(status == "complete" for _, _, status in results), results
    span = max(end for _, end, _ in results) - min(began for began, _, _ in results)
    return processes * spec.tokens / span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shares", default="1,2,4,8", help="processes per GPU, comma-separated")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try the script")
    args = parser.parse_args()
    spec = make_spec(args.d_model, args.steps)
    shares = [int(x) for x in args.shares.split(",")]
    figures = {}
    for processes in shares:
        figures[processes] = aggregate(spec, processes, args.device)
        print(f"{processes} per GPU: {figures[processes]:,.0f} tokens/s in all", flush=True)
    base = figures[shares[0]]
    print(
        json.dumps(
            {
                "d_model": args.d_model,
                "steps": args.steps,
                "tokens_per_s": figures,
                "speedup_vs_one": {p: v / base for p, v in figures.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
