"""Proxy training: the model (``model.py``), data (``data.py``), learning-rate schedules,
the single-trial loop (``run_trial``) and the fused trainer (``run_fused``).

The trainer knows nothing of Optuna or Ray: it turns a ``TrialSpec`` into a ``TrialOutcome``.
"""

from sweeper.train.data import data_identity, load_corpus
from sweeper.train.loop import run_trial

__all__ = ["data_identity", "load_corpus", "run_trial"]
