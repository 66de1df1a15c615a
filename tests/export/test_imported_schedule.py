"""A fit imported from Step Law's layout records no warmup, so its export needs the schedule
stated with --schedule ...; given it, every trainer format carries it and parses back."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweeper.cli import main
from sweeper.importers import import_steplaw
from tests.fit.test_importers import _steplaw_frame

from . import trainer_names as names
from .test_adapters import command_lines, strict_parser

SCHEDULE = ["--schedule", "cosine", "--warmup-steps", "2000", "--min-lr-ratio", "0.01"]


@pytest.fixture(scope="module")
def imported_fit(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("steplaw")
    csv = root / "steplaw.csv"
    _steplaw_frame().to_csv(csv, index=False)
    import_steplaw(csv, root / "run", size_column="Na")
    fitted = CliRunner().invoke(main, ["fit", str(root / "run"), "--bootstrap", "100", "--no-plots"])
    assert fitted.exit_code == 0, fitted.output
    targets = root / "targets.yaml"
    targets.write_text("- {name: big, params: 1.0e+9, tokens: 1.0e+10, seq_len: 2048}\n")
    return root / "run" / "fit.json", targets


def export(fit: Path, targets: Path, fmt: str, out: Path, *extra: str):
    return CliRunner().invoke(
        main, ["export", str(fit), "--targets", str(targets), "--format", fmt, "--out", str(out), *extra]
    )


def test_without_a_schedule_the_export_says_what_to_give(imported_fit, tmp_path) -> None:
    fit, targets = imported_fit
    assert json.loads(fit.read_text())["schedule"] is None  # per-run floors of 1e-5 differ
    result = export(fit, targets, "hf", tmp_path / "hf.json")
    assert result.exit_code == 2 and "schedule is unknown" in result.stderr
    result = export(fit, targets, "hf", tmp_path / "hf.json", "--schedule", "cosine")
    assert result.exit_code == 2 and "--warmup-steps or --warmup-fraction" in result.stderr
    assert not (tmp_path / "hf.json").exists()


def test_hf_torchtitan_megatron_nanogpt_carry_the_given_schedule(imported_fit, tmp_path) -> None:
    fit, targets = imported_fit
    table = export(fit, targets, "json", tmp_path / "t.json", *SCHEDULE)
    assert table.exit_code == 0, table.output
    record = json.loads((tmp_path / "t.json").read_text())["records"][0]
    assert record["schedule_source"] == "export options" and record["warmup_steps"] == 2000
    steps, lr = record["steps"], record["lr"]

    assert export(fit, targets, "hf", tmp_path / "hf.json", *SCHEDULE).exit_code == 0
    hf = json.loads((tmp_path / "hf.json").read_text())["targets"]["big"]
    assert hf["warmup_steps"] == 2000 and hf["max_steps"] == steps
    assert hf["lr_scheduler_type"] == "cosine_with_min_lr" and hf["lr_scheduler_kwargs"] == {
        "min_lr_rate": 0.01
    }

    assert export(fit, targets, "torchtitan", tmp_path / "tt.txt", *SCHEDULE).exit_code == 0
    flags = [
        f"--{section.replace('_', '-')}.{field.replace('_', '-')}"
        for section, fields in names.TORCHTITAN_FIELDS.items()
        for field in fields
    ]
    flags += [f"--optimizer.param-groups.0.optimizer-kwargs.{key}" for key in names.TORCHTITAN_ADAMW_KWARGS]
    (line,) = command_lines((tmp_path / "tt.txt").read_text())
    tt = vars(strict_parser(flags).parse_args(line))
    assert int(tt["lr_scheduler.warmup_steps"]) == 2000 and tt["lr_scheduler.decay_type"] == "cosine"
    assert float(tt["lr_scheduler.decay_ratio"]) * steps == pytest.approx(steps - 2000)
    assert float(tt["lr_scheduler.min_lr_factor"]) == 0.01

    assert export(fit, targets, "megatron", tmp_path / "mg.txt", *SCHEDULE).exit_code == 0
    (line,) = command_lines((tmp_path / "mg.txt").read_text())
    mg = strict_parser(names.MEGATRON_FLAGS).parse_args(line)
    assert mg.lr_decay_style == "cosine" and int(mg.lr_warmup_iters) == 2000
    assert float(mg.min_lr) == pytest.approx(0.01 * lr) and int(mg.train_iters) == steps

    assert export(fit, targets, "nanogpt", tmp_path / "cfg.py", *SCHEDULE).exit_code == 0
    assigned = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse((tmp_path / "cfg.py").read_text()).body
    }
    assert set(assigned) <= set(names.NANOGPT_GLOBALS)
    assert assigned["warmup_iters"] == 2000 and assigned["max_iters"] == steps
    assert assigned["min_lr"] == pytest.approx(0.01 * assigned["learning_rate"])


def test_a_recorded_schedule_cannot_be_replaced(fit_dir: Path, targets_file: Path, tmp_path: Path) -> None:
    result = export(fit_dir / "fit.json", targets_file, "hf", tmp_path / "hf.json", *SCHEDULE)
    assert result.exit_code == 2 and "fitted under it" in result.stderr
