"""Adapters: a table record in the terms of another trainer, for one named release of it.

Each adapter turns records (see ``sweeper.export.table``) into the text that trainer reads.
Field and flag names were read from the trainer's own source at the release in
``RELEASES`` (never from memory: names drift between releases); ``tests/export`` records
the full name lists with the same releases and checks every emitted name against them.

Batch arithmetic, shared by all adapters: the global batch G (sequences) is the record's
``batch_size_sequences`` (already rounded to ``--round-to``). With W data-parallel ranks and
a micro-batch M (sequences per rank per forward pass; default G / W), the gradient
accumulation A = G / (M * W) must be a whole number, else ExportError says which
``--round-to`` makes it so. The schedule is the proxies' (their warmup in steps, or their share of the
steps, the floor ``min_lr_ratio * lr``); a schedule the trainer cannot express is an ExportError,
not a silent approximation.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sweeper.export.table import SCHEMA_NAME, SCHEMA_VERSION, ExportError

#: Trainer release each adapter's names were taken from (also written into every output).
RELEASES: dict[str, str] = {
    "hf": "transformers 5.24.0 (PyPI wheel; src/transformers/training_args.py TrainingArguments,"
    " trainer_utils.py SchedulerType, optimization.py schedule kwargs)",
    "torchtitan": "torchtitan 0.3.0 (PyPI wheel; config/configs.py TrainingConfig,"
    " components/optimizer/optimizer.py ParamGroupConfig,"
    " components/optimizer/lr_scheduler.py LRSchedulersContainer.Config; CLI by tyro)",
    "megatron": "Megatron-LM commit 00caa53af30912914981c86f39db123961678bbd"
    " (megatron/training/arguments.py, training_config.py SchedulerConfig and"
    " TrainingConfig, megatron/core/optimizer_param_scheduler.py)",
    "nanogpt": "nanoGPT commit e2221318e607eb5ee0669d6b7641af25a2111545 (train.py globals,"
    " overridden by configurator.py)",
}


@dataclass(frozen=True)
class Layout:
    """How the global batch G is split: W ranks x M sequences x A accumulation steps."""

    global_sequences: int
    world_size: int
    micro_batch: int
    accumulation: int


def layout(record: dict[str, Any], world_size: int, micro_batch: int | None) -> Layout:
    """Split the record's global batch over ``world_size`` ranks (see the module docstring)."""
    g = int(record["batch_size_sequences"])
    if world_size < 1 or (micro_batch is not None and micro_batch < 1):
        raise ExportError("--world-size and --micro-batch must be positive")
    if micro_batch is None:
        if g % world_size:
            raise ExportError(
                f"target {record['name']}: batch of {g} sequences does not split over"
                f" {world_size} ranks; use --round-to {world_size} (or a multiple)"
            )
        micro_batch = g // world_size
    if g % (micro_batch * world_size):
        raise ExportError(
            f"target {record['name']}: batch of {g} sequences is not a multiple of"
            f" micro-batch {micro_batch} x world size {world_size}; use --round-to"
            f" {micro_batch * world_size}"
        )
    return Layout(g, world_size, micro_batch, g // (micro_batch * world_size))


def _need_schedule(record: dict[str, Any], trainer: str) -> str:
    kind = record["schedule"]
    if kind == "power":
        # None of the supported trainers' schedulers computes lr from the tokens seen.
        raise ExportError(
            f"target {record['name']}: {trainer} has no Power scheduler (lr = min(peak,"
            " B * a * n^b)); export --format json or yaml, which carry its parameters"
        )
    if kind == "unknown" or record["warmup_steps"] is None:
        raise ExportError(
            f"target {record['name']}: the proxies' schedule is unknown (no schedule in"
            f" fit.json and no recipe.yaml next to it); {trainer} needs warmup and decay"
        )
    return kind


def _provenance(record: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "fit_sha256",
        "sweep",
        "estimator",
        "fit_created_at",
        "fitted_params_min",
        "fitted_params_max",
        "fitted_tokens_min",
        "fitted_tokens_max",
        "extrapolation_params",
        "extrapolation_tokens",
        "lr_low",
        "lr_high",
        "batch_size_tokens",
        "batch_rounding_change",
        "loss",
        "warnings",
        "forced",
    )
    return {key: record.get(key) for key in keys}


def _comment_header(records: list[dict[str, Any]], trainer: str) -> list[str]:
    first = records[0]
    return [
        f"# {SCHEMA_NAME} v{SCHEMA_VERSION} for {RELEASES[trainer]}",
        f"# fit sha256 {first['fit_sha256']}, sweep {first['sweep']}, estimator {first['estimator']}",
    ]


def _target_comment(record: dict[str, Any]) -> str:
    interval = (
        "UNDETERMINED" if record["lr_low"] is None else f"[{record['lr_low']:.4g}, {record['lr_high']:.4g}]"
    )
    return (
        f"# target {record['name']}: N={record['params']:.4g} D={record['tokens']:.4g}"
        f" seq_len={record['seq_len']} lr 95% {interval}"
        f" extrapolation N x{record['extrapolation_params']:.3g} D x{record['extrapolation_tokens']:.3g}"
        + (f"; {record['warnings']}" if record["warnings"] else "")
    )


# --- Hugging Face TrainingArguments ------------------------------------------------------


def hf_arguments(
    record: dict[str, Any], world_size: int = 1, micro_batch: int | None = None
) -> dict[str, Any]:
    """TrainingArguments keyword arguments: ``TrainingArguments(output_dir=..., **these)``.
    per_device_train_batch_size x gradient_accumulation_steps x world size = the batch."""
    split = layout(record, world_size, micro_batch)
    kind = _need_schedule(record, "hf")
    arguments: dict[str, Any] = {
        "learning_rate": record["lr"],
        "per_device_train_batch_size": split.micro_batch,
        "gradient_accumulation_steps": split.accumulation,
        "max_steps": record["steps"],
        "warmup_steps": record["warmup_steps"],
    }
    if kind == "cosine":
        # get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=): floor = rate x peak.
        arguments["lr_scheduler_type"] = "cosine_with_min_lr"
        arguments["lr_scheduler_kwargs"] = {"min_lr_rate": record["min_lr_ratio"]}
    elif kind == "constant":
        arguments["lr_scheduler_type"] = "constant_with_warmup"
    else:  # wsd: get_wsd_schedule, linear decay to min_lr_ratio x peak, as the proxies did
        decay = max(1, round(record["decay_fraction"] * record["steps"]))
        arguments["lr_scheduler_type"] = "warmup_stable_decay"
        arguments["lr_scheduler_kwargs"] = {
            "num_decay_steps": decay,
            "decay_type": "linear",
            "min_lr_ratio": record["min_lr_ratio"],
        }
    return arguments


def render_hf(records: list[dict[str, Any]], world_size: int = 1, micro_batch: int | None = None) -> str:
    document = {
        "kind": f"{SCHEMA_NAME}.hf",
        "schema_version": SCHEMA_VERSION,
        "trainer_release": RELEASES["hf"],
        "usage": "TrainingArguments(output_dir=..., **document['targets'][NAME])",
        "world_size": world_size,
        "targets": {r["name"]: hf_arguments(r, world_size, micro_batch) for r in records},
        "provenance": {r["name"]: _provenance(r) for r in records},
    }
    return json.dumps(document, indent=2) + "\n"


# --- torchtitan ---------------------------------------------------------------------------


def torchtitan_overrides(
    record: dict[str, Any], world_size: int = 1, micro_batch: int | None = None
) -> list[str]:
    """Command-line overrides for ``torchtitan.train --module M --config C``. The learning rate
    goes to param group 0 (the catch-all group of ``default_adamw``); a config with several
    groups needs the same lr on each."""
    split = layout(record, world_size, micro_batch)
    kind = _need_schedule(record, "torchtitan")
    flags = [
        ("--training.global-batch-size", split.global_sequences),
        ("--training.local-batch-size", split.micro_batch),
        ("--training.seq-len", record["seq_len"]),
        ("--training.steps", record["steps"]),
        ("--optimizer.param-groups.0.optimizer-kwargs.lr", repr(float(record["lr"]))),
        ("--lr-scheduler.warmup-steps", record["warmup_steps"]),
    ]
    # decay_ratio always explicit: a config's own (llama3_debugmodel sets 0.8) would otherwise
    # put a stable phase before the decay, silently turning a cosine into stable-then-decay.
    after_warmup = (record["steps"] - record["warmup_steps"]) / record["steps"]
    if kind == "cosine":
        flags += [
            ("--lr-scheduler.decay-type", "cosine"),
            ("--lr-scheduler.decay-ratio", repr(after_warmup)),
            ("--lr-scheduler.min-lr-factor", record["min_lr_ratio"]),
        ]
    elif kind == "constant":
        # No constant decay type: a floor equal to the peak keeps the lr flat after warmup.
        flags += [
            ("--lr-scheduler.decay-type", "linear"),
            ("--lr-scheduler.decay-ratio", repr(after_warmup)),
            ("--lr-scheduler.min-lr-factor", 1.0),
        ]
    else:
        flags += [
            ("--lr-scheduler.decay-type", "linear"),
            ("--lr-scheduler.decay-ratio", record["decay_fraction"]),
            ("--lr-scheduler.min-lr-factor", record["min_lr_ratio"]),
        ]
    return [part for flag, value in flags for part in (flag, str(value))]


def _render_command_lines(
    records: list[dict[str, Any]],
    trainer: str,
    usage: str,
    arguments: Any,
    world_size: int,
    micro_batch: int | None,
) -> str:
    """A commented header, then per target a comment and one shell-quoted argument line."""
    lines = _comment_header(records, trainer)
    lines.append(f"# one line per target; append it to: {usage}")
    for record in records:
        lines += [_target_comment(record), shlex.join(arguments(record, world_size, micro_batch))]
    return "\n".join(lines) + "\n"


def render_torchtitan(
    records: list[dict[str, Any]], world_size: int = 1, micro_batch: int | None = None
) -> str:
    return _render_command_lines(
        records,
        "torchtitan",
        "torchrun ... -m torchtitan.train --module M --config C",
        torchtitan_overrides,
        world_size,
        micro_batch,
    )


def _schedule_without_wsd(record: dict[str, Any], trainer: str, why: str) -> str:
    """The record's schedule kind for a trainer that has no warmup-stable-decay: refused
    (ExportError naming ``why``), never approximated."""
    kind = _need_schedule(record, trainer)
    if kind == "wsd":
        raise ExportError(f"target {record['name']}: {why}")
    return kind


# --- Megatron-LM --------------------------------------------------------------------------


def megatron_arguments(
    record: dict[str, Any], world_size: int = 1, micro_batch: int | None = None
) -> list[str]:
    """Iteration-based arguments for pretrain_gpt.py. ``world_size`` is the data-parallel size
    (Megatron derives A = global / (micro x data-parallel) itself). WSD uses Megatron's own
    style: constant at --lr until the last --lr-wsd-decay-iters of --lr-decay-iters, then a
    linear decay to --min-lr (OptimizerParamScheduler.get_lr), as the proxies decayed."""
    split = layout(record, world_size, micro_batch)
    kind = _need_schedule(record, "megatron")
    lr = float(record["lr"])
    floor = lr if kind == "constant" else lr * record["min_lr_ratio"]
    flags = [
        ("--lr", repr(lr)),
        ("--min-lr", repr(floor)),
        ("--lr-decay-style", "WSD" if kind == "wsd" else kind),
        ("--lr-warmup-iters", record["warmup_steps"]),
        ("--lr-decay-iters", record["steps"]),
        ("--train-iters", record["steps"]),
        ("--global-batch-size", split.global_sequences),
        ("--micro-batch-size", split.micro_batch),
        ("--seq-length", record["seq_len"]),
    ]
    if kind == "wsd":
        flags += [
            ("--lr-wsd-decay-style", "linear"),
            ("--lr-wsd-decay-iters", max(1, round(record["decay_fraction"] * record["steps"]))),
        ]
    return [part for flag, value in flags for part in (flag, str(value))]


def render_megatron(
    records: list[dict[str, Any]], world_size: int = 1, micro_batch: int | None = None
) -> str:
    return _render_command_lines(
        records,
        "megatron",
        "torchrun ... pretrain_gpt.py <model/data args>",
        megatron_arguments,
        world_size,
        micro_batch,
    )


# --- nanoGPT ------------------------------------------------------------------------------


def nanogpt_globals(
    record: dict[str, Any], world_size: int = 1, micro_batch: int | None = None
) -> dict[str, Any]:
    """Globals of a nanoGPT config file. nanoGPT's gradient_accumulation_steps is the total
    over all ranks (train.py divides it by the world size), so it is A x W here."""
    split = layout(record, world_size, micro_batch)
    kind = _schedule_without_wsd(
        record, "nanogpt", "nanoGPT's get_lr is warmup + cosine only; it cannot express a WSD schedule"
    )
    lr = float(record["lr"])
    return {
        "learning_rate": lr,
        "batch_size": split.micro_batch,
        "gradient_accumulation_steps": split.accumulation * split.world_size,
        "block_size": int(record["seq_len"]),
        "max_iters": int(record["steps"]),
        "lr_decay_iters": int(record["steps"]),
        "warmup_iters": int(record["warmup_steps"]),
        "decay_lr": True,
        # constant: a floor equal to the peak makes get_lr's cosine flat but keeps the warmup.
        "min_lr": lr * record["min_lr_ratio"] if kind == "cosine" else lr,
    }


def render_nanogpt(records: list[dict[str, Any]], world_size: int = 1, micro_batch: int | None = None) -> str:
    if len(records) != 1:
        raise ExportError("a nanoGPT config file holds one run: choose a target with --only NAME")
    record = records[0]
    lines = _comment_header(records, "nanogpt")
    lines += [
        f"# usage: torchrun --nproc_per_node={world_size} train.py this_file.py",
        _target_comment(record),
    ]
    lines += [
        f"{name} = {value!r}" for name, value in nanogpt_globals(record, world_size, micro_batch).items()
    ]
    return "\n".join(lines) + "\n"


ADAPTERS: dict[str, Callable[..., str]] = {
    "hf": render_hf,
    "torchtitan": render_torchtitan,
    "megatron": render_megatron,
    "nanogpt": render_nanogpt,
}

__all__ = [
    "ADAPTERS",
    "RELEASES",
    "Layout",
    "hf_arguments",
    "layout",
    "megatron_arguments",
    "nanogpt_globals",
    "torchtitan_overrides",
]
