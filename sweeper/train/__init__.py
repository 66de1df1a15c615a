"""Proxy training: the model (``model.py``), data (``data.py``), learning-rate schedules,
the single-trial loop (``run_trial``) and the fused trainer (``run_fused``: K compatible
trials as one stacked model, see ``fused.py``).

The trainer knows nothing of Optuna, Ray or pydantic: it turns ``trainspec.TrainSpec``s (plain
dataclasses; a planned ``TrialSpec`` is read into one) into ``TrialOutcome``s, with torch alone.
"""

from sweeper.train.data import DataError, check_data, data_identity, load_corpus
from sweeper.train.fused import run_fused
from sweeper.train.loop import run_trial

__all__ = ["DataError", "check_data", "data_identity", "load_corpus", "run_fused", "run_trial"]
