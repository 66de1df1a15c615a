"""Writes tests/export/data/fit.json: `sweeper fit` (plateau) of a synthetic sweep with known
laws, shaped like the smoke recipe (N 3e3-1.2e4, D 1.6e4-6.4e4, seq_len 32), whose laws are
determined, so predictions and exports are not refused. The schedule is left out of the rows
so exports read it from recipe.yaml beside the fit. Run from the repository root:
``PYTHONPATH=. .venv/bin/python tests/export/make_fit_fixture.py``."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from sweeper.fit import fit_run
from tests.fit.synthetic import Truth, synthetic_rows, write_run

OUT = Path(__file__).parent / "data" / "fit.json"


def main() -> None:
    truth = Truth(a=0.18, alpha=-0.45, beta=0.12, c=2.5, gamma=0.45)
    rows = synthetic_rows(
        truth,
        sizes=(3e3, 6e3, 1.2e4),
        budgets=(1.6e4, 3.2e4, 6.4e4),
        n_lr=7,
        n_b=5,
        lr_step=2**0.5,
        b_step=2**0.5,
        seq_len=32,
        seed=3,
        noise=5e-4,
    )
    for row in rows:
        row.update(sweep="smoke-shaped", schedule=None)
    run = Path(tempfile.mkdtemp()) / "run"
    write_run(run, rows)
    fit_run(run, estimator="plateau", n_bootstrap=200, plots=False, loss_law=False)
    shutil.copy(run / "fit.json", OUT)


if __name__ == "__main__":
    main()
