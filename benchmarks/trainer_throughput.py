"""Throughput of the proxy trainer: single-trial path, fused path, bare PyTorch loop, and the
machine's matmul peak, measured in one run.

    python benchmarks/trainer_throughput.py --quick      # < 2 min on 2 CPU cores
    python benchmarks/trainer_throughput.py              # more steps and repetitions, all fused
    python benchmarks/trainer_throughput.py --quick --device cuda   # any CUDA machine (bf16 autocast)

For each shape (2 layers, seq 64, batch 16, byte vocabulary; d_model 32..256) it measures

- bare:   a minimal PyTorch loop written here (same GPT module, fused AdamW, clipping; no
          schedule, no logging, no validation): the floor of framework overhead;
- single: ``sweeper.train.run_trial`` end to end (setup and its final validation included);
- fused:  ``sweeper.train.fused.run_fused`` with K members differing in lr (aggregate
          tokens/s = K * tokens / group wall time);

and reports tokens/s and achieved FLOP/s, FLOPs per token = 6 * (N + V*d) + 12 * L * d * T
(N non-embedding weights, V*d the tied head's matmul, 12*L*d*T attention scores and values,
forward and backward, as in DeepSeek LLM's M), against the fp32 matmul peak measured with
the same thread count. ``fused_vs_sequential`` runs the K trainings one after another
through run_trial and compares with the same K as one fused group, for d_model 32 and 64 at
per-step batches of 2 and 16 sequences (same tokens per run); the headline figure is
d_model 64 at 2 sequences. Every timing is the best of
``--reps`` runs. On a shared CPU the default clock is the process's CPU time (user + system
of all its threads): with one thread it is what the run would take on a core of its own,
and other tenants' load does not leak into it; ``--clock wall`` measures wall time (used on
CUDA regardless). Timings are figures, not tests.

The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeper.plan import TrialSpec, plan_trials  # noqa: E402
from sweeper.recipe import parse_recipe  # noqa: E402
from sweeper.train import data_identity, load_corpus, run_trial  # noqa: E402
from sweeper.train.fused import run_fused  # noqa: E402
from sweeper.train.model import GPT, GPTConfig  # noqa: E402
from sweeper.train.stacked import StackedGPT, StackedParameters  # noqa: E402

SEQ_LEN, BATCH, LAYERS = 64, 16, 2


def make_specs(d_model: int, steps: int, members: int, batch: int = BATCH) -> list[TrialSpec]:
    recipe = parse_recipe(
        {
            "name": "bench",
            "models": [
                {"d_model": d_model, "n_layers": LAYERS, "n_heads": max(1, d_model // 16), "seq_len": SEQ_LEN}
            ],
            "tokens": {"absolute": [steps * batch * SEQ_LEN]},
            # Moderate, stable learning rates: a diverging member would leave the group early.
            "learning_rates": {"values": [round(1e-3 * 1.3**i, 6) for i in range(members)]},
            "batch_sizes": [batch],
            "evaluation": {"val_batches": 1},
        }
    )
    return plan_trials(recipe, data_identity(recipe.data))


def flops_per_token(spec: TrialSpec) -> float:
    shape = spec.shape
    return (
        6.0 * (shape.n_params_nonembedding + shape.vocab_size * shape.d_model)
        + 12.0 * shape.n_layers * shape.d_model * shape.seq_len
    )


CLOCK = time.process_time  # set from --clock in main()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def now(device: str) -> float:
    sync(device)
    return time.perf_counter() if device.startswith("cuda") else CLOCK()


def matmul_peak(threads: int, device: str, size: int, reps: int) -> float:
    """Best fp32 matmul FLOP/s for ``size``^3 (bf16 on CUDA, the precision training uses)."""
    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = math.inf
    for _ in range(reps):
        a @ b
        start = now(device)
        for _ in range(5):
            a @ b
        best = min(best, (now(device) - start) / 5)
    return 2.0 * size**3 / best


def bare_loop(spec: TrialSpec, threads: int, device: str) -> float:
    """Tokens/s of the floor: model build, then steps of forward/backward/clip/AdamW."""
    torch.set_num_threads(threads)
    corpus = load_corpus(spec.data)
    start = now(device)
    torch.manual_seed(spec.seed)
    model = GPT(GPTConfig.from_shape(spec.shape)).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=spec.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True
    )
    data = corpus.train
    window = torch.arange(SEQ_LEN + 1)
    use_bf16 = device.startswith("cuda")
    for _ in range(spec.steps):
        starts = torch.randint(len(data) - SEQ_LEN - 1, (BATCH, 1))
        batch = data[starts + window].long().to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return spec.tokens / (now(device) - start)


def single(spec: TrialSpec, threads: int, device: str) -> float:
    start = now(device)
    outcome = run_trial(spec, threads=threads, device=device)
    elapsed = now(device) - start
    assert outcome.status == "complete", (outcome.status, outcome.error)
    return outcome.tokens_done / elapsed


def fused(specs: list[TrialSpec], threads: int, device: str) -> float:
    start = now(device)
    outcomes = run_fused(specs, threads=threads, device=device)
    wall = now(device) - start
    assert all(o.status == "complete" for o in outcomes), [(o.status, o.error) for o in outcomes]
    return sum(o.tokens_done for o in outcomes) / wall


def sequential(specs: list[TrialSpec], threads: int, device: str) -> float:
    """Aggregate tokens/s of ``specs`` trained one after another through run_trial."""
    start = now(device)
    for spec in specs:
        single(spec, threads, device)
    return sum(s.tokens for s in specs) / (now(device) - start)


def best(measure, reps: int) -> float:
    return max(measure() for _ in range(reps))


def vmap_vs_bmm(spec: TrialSpec, members: int, threads: int, device: str, steps: int) -> dict:
    """Forward+backward time of K stacked members: hand-written bmm forward (what fused.py
    uses) against torch.func.vmap over functional_call of the ordinary module."""
    torch.set_num_threads(threads)
    config = GPTConfig.from_shape(spec.shape)
    torch.manual_seed(0)
    models = [GPT(config).to(device) for _ in range(members)]
    stacked_params = StackedParameters(models, device)
    idx = torch.randint(0, config.vocab_size, (BATCH, SEQ_LEN), device=device)
    targets = torch.randint(0, config.vocab_size, (BATCH, SEQ_LEN), device=device)
    stacked = StackedGPT(config)
    base = models[0]

    def bmm_step() -> None:
        stacked.member_losses(stacked_params.views(), idx, targets).sum().backward()

    def member_loss(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = torch.func.functional_call(base, p, (x,))
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    batched = torch.func.vmap(member_loss, in_dims=(0, None, None))

    def vmap_step() -> None:
        batched(stacked_params.views(), idx, targets).sum().backward()

    result = {}
    for name, step in (("bmm", bmm_step), ("vmap", vmap_step)):
        try:
            step()
            start = now(device)
            for _ in range(steps):
                step()
            result[f"{name}_ms_per_step"] = 1e3 * (now(device) - start) / steps
        except Exception as error:  # noqa: BLE001 - a figure, not a requirement
            result[f"{name}_error"] = f"{type(error).__name__}: {error}"[:200]
    if "bmm_ms_per_step" in result and "vmap_ms_per_step" in result:
        result["vmap_over_bmm_time"] = result["vmap_ms_per_step"] / result["bmm_ms_per_step"]
    return result


def run_device(args: argparse.Namespace, device: str) -> dict:
    widths = [32, 64, 128, 256]
    peak = matmul_peak(args.threads, device, 1024 if args.quick else 2048, args.reps)
    rows = []
    clock = "wall" if device.startswith("cuda") else args.clock
    print(
        f"\n== {device} ({platform.processor() or platform.machine()}), {args.threads} thread(s), {clock} clock; "
        f"matmul peak {peak / 1e9:.1f} GFLOP/s =="
    )
    print(
        f"{'shape':>18} {'K':>2} {'bare tok/s':>11} {'single tok/s':>13} {'fused tok/s':>12} "
        f"{'single/bare':>11} {'fused/single':>12} {'single GF/s':>11} {'fused GF/s':>10} {'single %pk':>10} {'fused %pk':>9}"
    )
    for width in widths:
        steps = args.steps
        specs = make_specs(width, steps, args.members)
        fpt = flops_per_token(specs[0])
        bare_tps = single_tps = 0.0
        for _ in range(args.reps):  # interleaved, so drift in background load hits both alike
            bare_tps = max(bare_tps, bare_loop(specs[0], args.threads, device))
            single_tps = max(single_tps, single(specs[0], args.threads, device))
        fused_tps = (
            best(lambda: fused(specs, args.threads, device), args.fused_reps)
            if width <= args.fuse_up_to
            else float("nan")
        )
        row = {
            "shape": specs[0].shape.name,
            "d_model": width,
            "n_params": specs[0].shape.n_params_nonembedding,
            "flops_per_token": fpt,
            "members": args.members,
            "steps": steps,
            "bare_tokens_per_s": bare_tps,
            "single_tokens_per_s": single_tps,
            "fused_tokens_per_s": fused_tps,
            "single_vs_bare": single_tps / bare_tps,
            "fused_vs_single": fused_tps / single_tps,
            "bare_flops": bare_tps * fpt,
            "single_flops": single_tps * fpt,
            "fused_flops": fused_tps * fpt,
            "single_fraction_of_peak": single_tps * fpt / peak,
            "fused_fraction_of_peak": fused_tps * fpt / peak,
        }
        rows.append(row)
        print(
            f"{row['shape']:>18} {args.members:>2} {bare_tps:>11.0f} {single_tps:>13.0f} {fused_tps:>12.0f} "
            f"{row['single_vs_bare']:>11.3f} {row['fused_vs_single']:>12.2f} {row['single_flops'] / 1e9:>11.2f} "
            f"{row['fused_flops'] / 1e9:>10.2f} {100 * row['single_fraction_of_peak']:>9.1f}% "
            f"{100 * row['fused_fraction_of_peak']:>8.1f}%",
            flush=True,
        )

    # The headline: K trainings one after another through run_trial vs the same K as one
    # fused group, for d_model 32 and 64 and per-step batches from the overhead-bound regime
    # (2 sequences = 128 tokens: a 25k-parameter model at ~7 GFLOP/s, the regime fusing is for)
    # to the table's 16 sequences. Every run trains the same number of tokens.
    headline = []
    for width in (32, 64):
        for batch in args.headline_batches:
            steps = max(4, args.steps * BATCH // batch)
            specs = make_specs(width, steps, args.members, batch=batch)
            sequential_tps = best(lambda: sequential(specs, args.threads, device), args.fused_reps)
            fused_tps = best(lambda: fused(specs, args.threads, device), args.fused_reps)
            headline.append(
                {
                    "d_model": width,
                    "batch_size": batch,
                    "members": args.members,
                    "steps": steps,
                    "sequential_tokens_per_s": sequential_tps,
                    "fused_tokens_per_s": fused_tps,
                    "fused_vs_sequential": fused_tps / sequential_tps,
                }
            )
            print(
                f"d_model {width}, batch {batch:>2} sequences, K={args.members}: sequential {sequential_tps:>7.0f} tok/s, "
                f"fused {fused_tps:>7.0f} tok/s -> fused_vs_sequential {fused_tps / sequential_tps:.2f}",
                flush=True,
            )
    specs = make_specs(64, args.steps, args.members)
    comparison = vmap_vs_bmm(specs[0], args.members, args.threads, device, steps=3 if args.quick else 10)
    print("stacked forward+backward, K members, d_model 64:", comparison)
    at_64 = next(r for r in rows if r["d_model"] == 64)
    headline_64 = next(r for r in headline if r["d_model"] == 64)
    return {
        "device": device,
        "threads": args.threads,
        "matmul_peak_flops": peak,
        "shapes": rows,
        "single_vs_bare": at_64["single_vs_bare"],
        "single_vs_bare_min": min(r["single_vs_bare"] for r in rows),
        # d_model 64 at the smallest headline batch; every (d_model, batch) in "fused_vs_sequential_all".
        "fused_vs_sequential": headline_64["fused_vs_sequential"],
        "fused_vs_sequential_batch_size": headline_64["batch_size"],
        "fused_vs_sequential_best_d_model_le_64": max(r["fused_vs_sequential"] for r in headline),
        "fused_vs_sequential_all": headline,
        "vmap_vs_bmm": comparison,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="few steps and repetitions; fuse up to d_model 128"
    )
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    parser.add_argument("--members", type=int, default=8, help="K, members of a fused group")
    parser.add_argument(
        "--headline-batches",
        type=int,
        nargs="+",
        default=[2, 16],
        help="per-step batches (sequences) of the fused-vs-sequential rows; the first is the headline",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one Ray CPU per trial: 1)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions; the best is kept")
    parser.add_argument("--fuse-up-to", type=int, default=None, help="largest d_model to fuse")
    parser.add_argument(
        "--clock",
        choices=["process", "wall"],
        default="process",
        help="CPU timing: process CPU time (robust on a shared machine) or wall time",
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: the CPU, and CUDA too when available",
    )
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "process" else time.perf_counter
    args.steps = args.steps or (16 if args.quick else 60)
    args.reps = args.reps or 3
    args.fused_reps = 2 if args.quick else args.reps  # fused groups are K times longer
    args.fuse_up_to = args.fuse_up_to or (128 if args.quick else 256)
    devices = (
        ["cpu"]
        if args.device == "cpu"
        else ["cuda"]
        if args.device == "cuda"
        else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    started = time.perf_counter()
    results = [run_device(args, device) for device in devices]
    summary = dict(results[0])
    summary.update(
        torch=torch.__version__,
        quick=args.quick,
        clock=args.clock,
        wall_seconds=time.perf_counter() - started,
        flops_formula="6*(N_nonembedding + vocab*d_model) + 12*n_layers*d_model*seq_len per token",
    )
    if len(results) > 1:
        summary["cuda"] = results[1]
    print(json.dumps(summary, default=float))


if __name__ == "__main__":
    main()
