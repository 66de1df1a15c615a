"""The public API: every name re-exported from sweeper resolves, and the trainer-facing
part imports without Ray or torch."""

from __future__ import annotations

import subprocess
import sys

import sweeper


def test_every_public_name_resolves() -> None:
    for name in sweeper.__all__:
        assert getattr(sweeper, name) is not None, name


def test_reading_hparams_pulls_in_neither_ray_nor_torch() -> None:
    code = (
        "import sys; from sweeper import load_hparams, read_trials, fit_run, Recipe; "
        "assert 'ray' not in sys.modules and 'torch' not in sys.modules, "
        "[m for m in ('ray', 'torch') if m in sys.modules]"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
