"""Predictions from fit.json: the formula, intervals, extrapolation warnings, light imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sweeper.fit import fit_run
from sweeper.hparams import HparamsError, PredictionRefused, load_hparams
from sweeper.uncertainty import EXTRAPOLATION_LIMIT


@pytest.fixture(scope="module")
def fitted(synthetic_run):
    fit_run(synthetic_run, estimator="plateau", n_bootstrap=300, plots=False, loss_law=True)
    return synthetic_run / "fit.json"


def test_predict_matches_the_law_formula(fitted):
    document = json.loads(fitted.read_text())
    lr_c = document["lr_law"]["coefficients"]
    b_c = document["batch_law"]["coefficients"]
    n, d, s = 2e7, 2e9, 256
    p = load_hparams(fitted).predict(n, d, s)
    assert p.lr == pytest.approx(lr_c["a"] * n ** lr_c["alpha"] * d ** lr_c["beta"], rel=1e-9)
    assert p.batch_size_tokens == pytest.approx(b_c["c"] * d ** b_c["gamma"], rel=1e-9)
    assert p.batch_size_sequences == max(1, round(p.batch_size_tokens / s))
    assert isinstance(p.batch_size_sequences, int)
    assert p.lr_interval[0] < p.lr < p.lr_interval[1]
    assert p.batch_size_tokens_interval[0] < p.batch_size_tokens < p.batch_size_tokens_interval[1]
    assert p.extrapolation_n_params == 1.0 and p.extrapolation_tokens == 1.0
    assert p.warnings == []
    assert p.loss is not None and p.loss_interval[0] <= p.loss <= p.loss_interval[1]
    as_dict = p.to_dict()
    for key in (
        "lr",
        "batch_size_tokens",
        "batch_size_sequences",
        "lr_interval",
        "batch_size_tokens_interval",
    ):
        assert key in as_dict
    json.dumps(as_dict)


def test_extrapolation_is_measured_and_widens_the_interval(fitted):
    hp = load_hparams(fitted)
    inside = hp.predict(1e7, 1e9, 256)
    outside = hp.predict(5e9, 5e11, 256)  # 50x beyond: inside the limit, warned
    assert outside.extrapolation_n_params == pytest.approx(50.0)
    assert outside.extrapolation_tokens == pytest.approx(50.0)
    assert any("50x beyond" in w for w in outside.warnings)
    assert outside.lr_interval_width > inside.lr_interval_width


def test_extrapolation_past_the_limit_is_refused_unless_forced(fitted):
    hp = load_hparams(fitted)
    with pytest.raises(PredictionRefused, match="extrapolation limit") as refused:
        hp.predict(1e8 * EXTRAPOLATION_LIMIT * 3, 1e9, 256)
    assert "--force" in str(refused.value) and len(refused.value.reasons) == 1
    forced = hp.predict(1e8 * EXTRAPOLATION_LIMIT * 3, 1e9, 256, force=True)
    assert forced.forced and forced.warnings[0].startswith("FORCED:")
    assert forced.to_dict()["forced"] == forced.forced


def test_batch_rounding_past_2x_is_refused_unless_forced(fitted):
    hp = load_hparams(fitted)
    law = hp.predict(1e6, 1e8, 256)
    # A sequence longer than 3x the law's batch: one sequence is > 2x the batch.
    seq_len = int(law.batch_size_tokens * 3)
    with pytest.raises(PredictionRefused, match="sequence"):
        hp.predict(1e6, 1e8, seq_len)
    forced = hp.predict(1e6, 1e8, seq_len, force=True)
    assert forced.batch_size_sequences == 1 and any("FORCED" in w for w in forced.warnings)


def test_bad_files_raise_hparams_error(tmp_path):
    with pytest.raises(HparamsError, match="not found"):
        load_hparams(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(HparamsError, match="cannot read"):
        load_hparams(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"kind": "sweeper.fit", "schema_version": 99}))
    with pytest.raises(HparamsError, match="schema_version"):
        load_hparams(tmp_path / "other.json")


def test_fitter_and_hparams_import_neither_ray_nor_torch():
    code = (
        "import sweeper.fit, sweeper.hparams, sweeper.fit.plots, sweeper.fit.evaluate,"
        " sweeper.fit.losslaw, sweeper.importers; import sys;"
        " assert 'ray' not in sys.modules and 'torch' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hparams_alone_imports_only_numpy_and_json():
    code = (
        "import sweeper.hparams, sys; bad = [m for m in ('scipy', 'matplotlib', 'pyarrow',"
        " 'ray', 'torch', 'pandas') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compute_fit_predicts_with_given_or_estimated_flops(synthetic_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(synthetic_run / "trials", run / "trials")
    fit_run(run, estimator="compute", n_bootstrap=50, plots=False, loss_law=False)
    document = json.loads((run / "fit.json").read_text())
    coefficients = document["lr_law"]["coefficients"]
    hp = load_hparams(run)
    n, d, m = 2e7, 2e9, 6 * 2e7 + 12 * 4 * 128 * 256
    given = hp.predict(n, d, 256, flops_per_token=m)
    assert given.lr == pytest.approx(coefficients["a"] * (m * d) ** coefficients["b"], rel=1e-9)
    assert given.warnings == []
    estimated = hp.predict(n, d, 256)
    assert any("flops per token (M) not given" in w for w in estimated.warnings)
    assert estimated.flops_per_token == pytest.approx(m, rel=0.05)


def test_undetermined_law_is_stored_printed_and_refused(tmp_path, cli):
    """Every cell's optimum pinned to the same grid corner (the smoke sweep's case): the
    bootstrap cannot measure the laws, so fit.json says so and predict refuses."""
    from click.testing import CliRunner

    from tests.fit.synthetic import _row, write_run

    # Loss rises with lr and B in every cell: each best run is the grid's lowest corner.
    grid = [
        (n, d, i, lr, j, batch)
        for n in (1e6, 1e7)
        for d in (1e8, 1e9, 1e10)
        for i, lr in enumerate((1e-3, 2e-3, 4e-3))
        for j, batch in enumerate((4, 8, 16))
    ]
    rows = [
        _row(n, d, 256, lr, batch, 3.0 * (1 + 0.01 * i + 0.01 * j), index)
        for index, (n, d, i, lr, j, batch) in enumerate(grid)
    ]
    run = write_run(tmp_path / "pinned", rows)
    fitted = CliRunner().invoke(
        cli, ["fit", str(run), "--estimator", "plateau", "--bootstrap", "100", "--no-plots"]
    )
    assert fitted.exit_code == 0, fitted.output
    assert "UNDETERMINED" in fitted.output
    document = json.loads((run / "fit.json").read_text())
    law = document["batch_law"]
    assert law["determined"] is False and law["undetermined"]
    assert all(interval is None for interval in law["intervals"].values())
    predicted = CliRunner().invoke(
        cli, ["predict", str(run), "--params", "3e6", "--tokens", "1e9", "--seq-len", "256"]
    )
    assert predicted.exit_code == 2 and "undetermined" in predicted.output and "--force" in predicted.output
    forced = CliRunner().invoke(
        cli,
        ["predict", str(run), "--params", "3e6", "--tokens", "1e9", "--seq-len", "256", "--force", "--json"],
    )
    assert forced.exit_code == 0, forced.output
    prediction = json.loads(forced.stdout)
    assert prediction["batch_size_tokens_interval"] is None and prediction["forced"]
    assert "FORCED" in forced.stderr
