"""Trainer adapters: each output parsed the way its trainer would, every emitted name checked
against the list taken from that trainer's source (tests/export/trainer_names.py), values
checked against `sweeper predict` to its printed precision."""

from __future__ import annotations

import argparse
import ast
import json
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sweeper.cli import main
from sweeper.export import RELEASES, load_targets

from . import trainer_names as names
from .conftest import predict_printed, same_4g


def run_export(fit_json: Path, targets: Path, fmt: str, out: Path, *extra: str) -> str:
    result = CliRunner().invoke(
        main, ["export", str(fit_json), "--targets", str(targets), "--format", fmt, "--out", str(out), *extra]
    )
    assert result.exit_code == 0, result.output
    return out.read_text()


def command_lines(text: str) -> list[list[str]]:
    return [shlex.split(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def strict_parser(flags: list[str]) -> argparse.ArgumentParser:
    """argparse that knows only ``flags``: an unknown flag exits (SystemExit)."""
    parser = argparse.ArgumentParser(allow_abbrev=False, exit_on_error=False)
    for flag in flags:
        parser.add_argument(flag)
    return parser


def test_releases_are_named_in_outputs_and_tests() -> None:
    assert names.HF_RELEASE in RELEASES["hf"]
    assert names.TORCHTITAN_RELEASE in RELEASES["torchtitan"]
    assert names.MEGATRON_RELEASE.split()[-1] in RELEASES["megatron"]
    assert names.NANOGPT_RELEASE.split()[-1] in RELEASES["nanogpt"]


@pytest.mark.parametrize("world_size, micro_batch", [(1, None), (2, 1)])
def test_hf_training_arguments(
    fit_dir: Path, targets_file: Path, tmp_path: Path, world_size: int, micro_batch: int | None
) -> None:
    extra = ["--world-size", str(world_size)] + (["--micro-batch", str(micro_batch)] if micro_batch else [])
    document = json.loads(run_export(fit_dir / "fit.json", targets_file, "hf", tmp_path / "hf.json", *extra))
    assert names.HF_RELEASE in document["trainer_release"]
    for target in load_targets(targets_file):
        arguments = document["targets"][target.name]
        assert set(arguments) <= set(names.HF_TRAINING_ARGUMENTS), set(arguments) - set(
            names.HF_TRAINING_ARGUMENTS
        )
        kind = arguments["lr_scheduler_type"]
        assert kind in names.HF_SCHEDULER_TYPES
        assert set(arguments.get("lr_scheduler_kwargs") or {}) <= set(names.HF_SCHEDULER_KWARGS[kind])
        printed = predict_printed(fit_dir / "fit.json", target.params, target.tokens, target.seq_len)
        assert same_4g(arguments["learning_rate"], printed["lr"][0])
        batch = (
            arguments["per_device_train_batch_size"] * arguments["gradient_accumulation_steps"] * world_size
        )
        # --round-to defaults to world size x micro-batch: the predicted batch, rounded to it.
        multiple = world_size * (micro_batch or 1)
        assert batch == max(multiple, multiple * round(printed["batch_size_sequences"][0] / multiple))
        assert isinstance(arguments["warmup_steps"], int) and arguments["warmup_steps"] >= 1


def test_torchtitan_overrides(fit_dir: Path, targets_file: Path, tmp_path: Path) -> None:
    text = run_export(
        fit_dir / "fit.json", targets_file, "torchtitan", tmp_path / "tt.txt", "--world-size", "2"
    )
    assert names.TORCHTITAN_RELEASE in text
    flags = []
    for section, fields in names.TORCHTITAN_FIELDS.items():
        # tyro spells a field with '-' (its default) or '_': both are the same flag.
        flags += [f"--{section.replace('_', '-')}.{field.replace('_', '-')}" for field in fields]
    # param_groups is a list of ParamGroupConfig; tyro indexes its entries (.0.) and expands
    # optimizer_kwargs' keys, here AdamW's as in default_adamw().
    flags += [
        f"--optimizer.param-groups.0.{field.replace('_', '-')}"
        for field in names.TORCHTITAN_PARAM_GROUP_FIELDS
    ]
    flags += [f"--optimizer.param-groups.0.optimizer-kwargs.{key}" for key in names.TORCHTITAN_ADAMW_KWARGS]
    parser = strict_parser(flags)
    lines = command_lines(text)
    for target, line in zip(load_targets(targets_file), lines, strict=True):
        parsed = vars(parser.parse_args(line))
        printed = predict_printed(fit_dir / "fit.json", target.params, target.tokens, target.seq_len)
        assert same_4g(parsed["optimizer.param_groups.0.optimizer_kwargs.lr"], printed["lr"][0])
        global_batch = int(parsed["training.global_batch_size"])
        assert global_batch % (2 * int(parsed["training.local_batch_size"])) == 0
        assert abs(global_batch - printed["batch_size_sequences"][0]) <= 1  # rounded to a multiple of 2
        assert int(parsed["training.seq_len"]) == target.seq_len
        assert parsed["lr_scheduler.decay_type"] in names.TORCHTITAN_DECAY_TYPES
        # Explicit, so a config's own decay_ratio (0.8 in llama3_debugmodel) cannot insert a
        # stable phase: the cosine decays over every step after warmup.
        steps, warmup = int(parsed["training.steps"]), int(parsed["lr_scheduler.warmup_steps"])
        assert float(parsed["lr_scheduler.decay_ratio"]) * steps == pytest.approx(steps - warmup)


def test_megatron_arguments(fit_dir: Path, targets_file: Path, tmp_path: Path) -> None:
    text = run_export(fit_dir / "fit.json", targets_file, "megatron", tmp_path / "mg.txt")
    parser = strict_parser(names.MEGATRON_FLAGS)
    for target, line in zip(load_targets(targets_file), command_lines(text), strict=True):
        args = parser.parse_args(line)
        printed = predict_printed(fit_dir / "fit.json", target.params, target.tokens, target.seq_len)
        assert same_4g(args.lr, printed["lr"][0])
        assert float(args.min_lr) == pytest.approx(0.1 * float(args.lr))  # the recipe's min_lr_ratio
        assert int(args.global_batch_size) == printed["batch_size_sequences"][0]
        assert args.lr_decay_style in names.MEGATRON_DECAY_STYLES
        assert int(args.lr_warmup_iters) == round(0.1 * int(args.train_iters))


def test_nanogpt_config(fit_dir: Path, targets_file: Path, tmp_path: Path) -> None:
    text = run_export(
        fit_dir / "fit.json",
        targets_file,
        "nanogpt",
        tmp_path / "cfg.py",
        "--only",
        "big",
        "--world-size",
        "2",
        "--micro-batch",
        "1",
    )
    assert names.NANOGPT_RELEASE.split()[-1] in text
    assigned = {}
    for node in ast.parse(text).body:
        assert isinstance(node, ast.Assign), "a nanoGPT config holds assignments only"
        (target,) = node.targets
        assigned[target.id] = ast.literal_eval(node.value)
    assert set(assigned) <= set(names.NANOGPT_GLOBALS), set(assigned) - set(names.NANOGPT_GLOBALS)
    printed = predict_printed(fit_dir / "fit.json", 2e5, 3e5, 32)
    assert same_4g(assigned["learning_rate"], printed["lr"][0])
    # nanoGPT's gradient_accumulation_steps counts all ranks (train.py divides by world size).
    assert assigned["gradient_accumulation_steps"] % 2 == 0
    assert (
        assigned["batch_size"] * assigned["gradient_accumulation_steps"] == printed["batch_size_sequences"][0]
    )
    assert assigned["block_size"] == 32 and assigned["min_lr"] == pytest.approx(
        0.1 * assigned["learning_rate"]
    )


def test_nanogpt_needs_one_target(fit_dir: Path, targets_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(fit_dir / "fit.json"),
            "--targets",
            str(targets_file),
            "--format",
            "nanogpt",
            "--out",
            str(tmp_path / "c.py"),
        ],
    )
    assert result.exit_code == 2 and "--only" in result.stderr


def test_wsd_schedule(fit_dir: Path, targets_file: Path, tmp_path: Path) -> None:
    recipe = yaml.safe_load((fit_dir / "recipe.yaml").read_text())
    recipe["schedule"] = {"kind": "wsd", "warmup_fraction": 0.1, "min_lr_ratio": 0.0, "decay_fraction": 0.2}
    (fit_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    document = json.loads(run_export(fit_dir / "fit.json", targets_file, "hf", tmp_path / "hf.json"))
    arguments = document["targets"]["small"]
    assert arguments["lr_scheduler_type"] == "warmup_stable_decay"
    assert set(arguments["lr_scheduler_kwargs"]) <= set(names.HF_SCHEDULER_KWARGS["warmup_stable_decay"])
    text = run_export(fit_dir / "fit.json", targets_file, "torchtitan", tmp_path / "tt.txt")
    assert "--lr-scheduler.decay-ratio 0.2" in text
    # Megatron's own WSD style: stable, then a linear decay over the last 20% to the floor.
    text = run_export(fit_dir / "fit.json", targets_file, "megatron", tmp_path / "m.txt")
    for line in command_lines(text):
        args = strict_parser(names.MEGATRON_FLAGS).parse_args(line)
        assert args.lr_decay_style == "WSD" and args.lr_wsd_decay_style in names.MEGATRON_WSD_DECAY_STYLES
        assert int(args.lr_wsd_decay_iters) == round(0.2 * int(args.train_iters))
        assert int(args.lr_decay_iters) == int(args.train_iters) and float(args.min_lr) == 0.0
    # nanoGPT's get_lr is warmup + cosine only: refused, not approximated.
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(fit_dir / "fit.json"),
            "--targets",
            str(targets_file),
            "--format",
            "nanogpt",
            "--only",
            "small",
            "--out",
            str(tmp_path / "n.py"),
        ],
    )
    assert result.exit_code == 2 and "WSD" in result.stderr


def test_uneven_split_is_refused(fit_dir: Path, targets_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(fit_dir / "fit.json"),
            "--targets",
            str(targets_file),
            "--format",
            "hf",
            "--out",
            str(tmp_path / "h.json"),
            "--round-to",
            "1",
            "--world-size",
            "5",
        ],
    )
    assert result.exit_code == 2 and "--round-to 5" in result.stderr
