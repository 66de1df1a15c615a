"""The ``surface`` estimator: what it recovers on tables with known laws, and that its fit.json
serves ``predict``, ``load_hparams`` and ``export`` like any other estimator's."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sweeper.export import read_table
from sweeper.fit import fit_run, fit_sweep, load_sweep
from sweeper.fit.surface import Surface
from sweeper.hparams import load_hparams
from tests.fit.synthetic import Truth


@pytest.fixture(scope="module")
def asymmetric_fit(asymmetric_run):
    sweep = load_sweep(asymmetric_run)[0]
    return sweep, fit_sweep(sweep, "surface", n_bootstrap=200, seed=1)


def test_true_exponents_lie_inside_its_intervals(asymmetric_fit, truth: Truth) -> None:
    """Loss rises 3x faster above the optimal lr than below it, 0.05% noise, grids offset
    from the optimum: every true exponent lies inside the 95% interval, and the intervals
    are narrow enough to mean something (under 0.05 wide)."""
    _, fit = asymmetric_fit
    for law, true_exponents in ((fit.lr_law, (truth.alpha, truth.beta)), (fit.batch_law, (truth.gamma,))):
        interval = law.interval()[1:]
        for (low, high), true in zip(interval, true_exponents):
            assert low <= true <= high, (law.target, low, true, high)
            assert high - low < 0.05
    # The prefactors too: the law's lr at the sweep's centre within its interval.
    low, high = fit.lr_law.interval()[0]
    assert low <= math.log(truth.a) <= high


def test_the_shared_shape_finds_the_asymmetry(asymmetric_fit) -> None:
    """The table rises 3x faster above the optimal lr: k_x = ln(3) / 2 = 0.55; the batch axis
    is symmetric (k_y = 0) and has no lr-B cross term (rho = 0)."""
    sweep, _ = asymmetric_fit
    shape = Surface()._stage1(sweep).theta[:9]
    assert shape[7] == pytest.approx(math.log(3.0) / 2, abs=0.1)
    assert abs(shape[8]) < 0.1 and abs(np.tanh(shape[6])) < 0.1


def test_fit_json_round_trip_predict_and_export(asymmetric_run, tmp_path: Path, cli) -> None:
    run = tmp_path / "run"
    shutil.copytree(asymmetric_run / "trials", run / "trials")
    report = fit_run(run, estimator="surface", n_bootstrap=100, plots=False, loss_law=False)
    document = json.loads((run / "fit.json").read_text())
    assert document["estimator"] == "surface" and document["lr_law"]["determined"]
    assert len(document["lr_law"]["bootstrap_log_coefficients"]) == 100 - report.lr_law.n_degenerate
    target = {"n_params": 3e7, "tokens": 3e9, "seq_len": 256}
    prediction = load_hparams(run / "fit.json").predict(**target)
    expected = report.lr_law.predict_log(np.log([target["n_params"], target["tokens"]]))
    assert prediction.lr == pytest.approx(math.exp(expected), rel=1e-9)
    assert prediction.lr_interval[0] < prediction.lr < prediction.lr_interval[1]

    printed = CliRunner().invoke(
        cli,
        [
            "predict",
            str(run / "fit.json"),
            "--params",
            "3e7",
            "--tokens",
            "3e9",
            "--seq-len",
            "256",
            "--json",
        ],
    )
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout)["lr"] == pytest.approx(prediction.lr, rel=1e-9)

    targets = tmp_path / "targets.yaml"
    targets.write_text("- {name: mid, params: 3.0e+7, tokens: 3.0e+9, seq_len: 256}\n")
    out = tmp_path / "hparams.json"
    exported = CliRunner().invoke(
        cli,
        ["export", str(run / "fit.json"), "--targets", str(targets), "--format", "json", "--out", str(out)],
    )
    assert exported.exit_code == 0, exported.output
    (record,) = read_table(out)
    assert record["estimator"] == "surface"
    assert record["lr"] == pytest.approx(prediction.lr, rel=1e-9)
    assert record["batch_size_tokens"] == pytest.approx(prediction.batch_size_tokens, rel=1e-9)
