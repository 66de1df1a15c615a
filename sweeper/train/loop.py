"""The single-trial proxy trainer: ``run_trial(spec) -> TrialOutcome``.

Contract: it never raises for a training problem. An exception becomes status ``failed``
with ``error = "ExceptionType: message"``; a blown-up loss becomes ``diverged`` (see
``monitor.py``); anything else is ``complete`` with the final validation loss as headline.
It prints nothing (it runs inside Ray workers). On the CPU a seed fixes the whole run:
the same spec gives the same curve, bit for bit.

The hot loop is kept as lean as a bare PyTorch loop (the benchmark checks it): the learning
rates are computed before training, written into the optimizer's existing param groups, and
the per-step bookkeeping is a few Python float operations.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from sweeper.outcome import TrialOutcome
from sweeper.train.data import BatchSampler, check_vocab, load_corpus, validation_batches
from sweeper.train.model import GPT, GPTConfig, hidden_parameter_names
from sweeper.train.monitor import ProgressReport, TrialMonitor, error_text
from sweeper.train.schedules import lr_table
from sweeper.trainspec import TrainSpec, as_train_spec, eval_every_steps


def resolve_device(device: str | None) -> torch.device:
    return torch.device(device or "cpu")


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (weights and optimizer stay fp32); plain fp32 elsewhere, because
    CPU bf16 matmuls are slower than fp32 ones at these sizes."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(spec: TrainSpec, device: torch.device) -> GPT:
    """The trial's initial model: the global RNG seeded with ``spec.seed`` and nothing drawn
    before construction, so the weights are a function of (shape, seed) alone."""
    torch.manual_seed(spec.seed)
    return GPT(model_config(spec)).to(device)


def model_config(spec: TrainSpec) -> GPTConfig:
    return GPTConfig.from_shape(spec.shape, spec.mup_base_width)


def make_optimizer(model: GPT, spec: TrainSpec) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on every matrix (linear weights and the embeddings,
    the tied embedding included, as nanoGPT and Megatron do) and none on the norm gains:
    decaying a gain pulls it towards zero, which shrinks the signal rather than regularising.

    Each param group carries ``lr_mult``, its learning rate as a multiple of the schedule's:
    1 everywhere in the standard parametrization; in μP, 1 / m for the hidden matrices."""
    hidden = hidden_parameter_names(model.config)
    named = list(model.named_parameters())
    hidden_matrices = [p for name, p in named if name in hidden]
    other_matrices = [p for name, p in named if p.dim() >= 2 and name not in hidden]
    vectors = [p for _, p in named if p.dim() < 2]
    opt = spec.optimizer
    hidden_mult = 1.0 / model.config.width_mult
    groups = [
        {"params": hidden_matrices, "weight_decay": opt.weight_decay, "lr_mult": hidden_mult},
        {"params": other_matrices, "weight_decay": opt.weight_decay, "lr_mult": 1.0},
        {"params": vectors, "weight_decay": 0.0, "lr_mult": 1.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=spec.lr,
        betas=(opt.beta1, opt.beta2),
        eps=opt.eps,
        # fused: one kernel per parameter tensor doing the whole update in one pass over
        # memory (foreach makes ~10 passes); the fused trainer runs the same kernel per member.
        fused=True,
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> float:
    """Mean validation loss (nats/token) over fixed batches."""
    was_training = model.training
    model.eval()
    total = 0.0
    for inputs, targets in batches:
        with autocast_for(device):
            logits = model(inputs)
        total += F.cross_entropy(logits.float().flatten(0, 1), targets.flatten()).item()
    model.train(was_training)
    return total / len(batches)


def warm_up() -> None:
    """Pay a process's one-time costs of training before its first trial: building the first
    torch optimizer imports torch._dynamo (about a second). Ray runs it as each worker
    process starts (execute/ray_runner.py), off the trials' critical path."""
    layer = torch.nn.Linear(1, 1)
    torch.optim.AdamW(layer.parameters())


def run_trial(
    spec: TrainSpec | Any,
    *,
    threads: int | None = None,
    device: str | None = None,
    report: ProgressReport | None = None,
) -> TrialOutcome:
    """Train one proxy model as ``spec`` says and report how it ended (never raises for a
    training problem). ``spec``: a TrainSpec, or a planned TrialSpec (read into one);
    ``threads``: torch intra-op threads (default 1, one per Ray CPU); ``device``: torch device
    string (default CPU); ``report`` hears its progress while it runs (monitor.ProgressReport).
    ``node_id`` is left for the executor."""
    spec = as_train_spec(spec)
    monitor = TrialMonitor(spec, report)
    clock = time.perf_counter()
    try:
        final_val_loss = _train(spec, monitor, threads or 1, resolve_device(device))
    except Exception as error:  # noqa: BLE001 - the contract: every failure becomes a row
        return monitor.outcome(time.perf_counter() - clock, error=error_text(error))
    return monitor.outcome(time.perf_counter() - clock, final_val_loss=final_val_loss)


def _train(spec: TrainSpec, monitor: TrialMonitor, threads: int, device: torch.device) -> float:
    # ---- setup -------------------------------------------------------------------------
    torch.set_num_threads(threads)
    corpus = load_corpus(spec.data)
    check_vocab(corpus, spec.shape.vocab_size)
    model = build_model(spec, device)
    optimizer = make_optimizer(model, spec)
    groups = optimizer.param_groups
    parameters = list(model.parameters())
    sampler = BatchSampler(corpus, spec.batch_size, spec.shape.seq_len, spec.seed, str(device))
    val_batches = validation_batches(corpus, spec.shape.seq_len, spec.evaluation.val_batches, str(device))
    lrs = lr_table(spec.steps, spec.lr, spec.schedule, spec.batch_size_tokens)
    clip = spec.optimizer.grad_clip
    every = eval_every_steps(spec.evaluation, spec.batch_size_tokens)
    vocab = spec.shape.vocab_size
    model.train()

    # ---- training ----------------------------------------------------------------------
    for step in range(1, spec.steps + 1):
        lr = lrs[step - 1]
        for group in groups:
            group["lr"] = lr * group["lr_mult"]
        inputs, targets = sampler.next()
        with autocast_for(device):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float().view(-1, vocab), targets.reshape(-1))
        if monitor.observe(step, lr, loss.item()):
            return math.nan
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(parameters, clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        monitor.stepped(step)
        if every and step % every == 0 and step != spec.steps:
            monitor.record_val(step, evaluate(model, val_batches, device))

    # ---- final measurement -------------------------------------------------------------
    final_val_loss = evaluate(model, val_batches, device)
    monitor.record_val(spec.steps, final_val_loss)
    return final_val_loss


__all__ = [
    "warm_up",
    "autocast_for",
    "build_model",
    "evaluate",
    "make_optimizer",
    "model_config",
    "resolve_device",
    "run_trial",
]
