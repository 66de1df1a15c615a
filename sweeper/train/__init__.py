"""Proxy training: the model (``model.py``), data (``data.py``), learning-rate schedules,
the single-trial loop (``run_trial``) and the fused trainer (``run_fused``: K compatible
trials as one stacked model, see ``fused.py``).

The trainer knows nothing of Optuna or Ray: it turns ``TrialSpec``s into ``TrialOutcome``s.
"""

from sweeper.train.data import DataError, check_data, data_identity, load_corpus
from sweeper.train.fused import can_fuse, fused_memory_bytes, group_fusable, run_fused
from sweeper.train.loop import run_trial

__all__ = ["DataError", "can_fuse", "check_data", "data_identity", "fused_memory_bytes", "group_fusable", "load_corpus", "run_fused", "run_trial"]
