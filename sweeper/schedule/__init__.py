"""Schedule: which planned trial runs next. A grid walks its plan and tells an Optuna study
in batches (study.py); a law-guided search asks Optuna's LawGuidedSampler (adaptive.py)."""

from sweeper.schedule.adaptive import AdaptiveSettings, AdaptiveStudy, LawGuidedSampler, SearchCell
from sweeper.schedule.study import STUDY_FILE, Asked, SweepStudy, storage_for

__all__ = [
    "STUDY_FILE",
    "AdaptiveSettings",
    "AdaptiveStudy",
    "Asked",
    "LawGuidedSampler",
    "SearchCell",
    "SweepStudy",
    "storage_for",
]
