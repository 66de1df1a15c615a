"""Schedule: which planned trial runs next, decided by an Optuna study (ask/tell)."""

from sweeper.schedule.adaptive import AdaptiveSettings, LawGuidedSampler, SearchCell
from sweeper.schedule.study import STUDY_FILE, Asked, SweepStudy, storage_for

__all__ = ["STUDY_FILE", "AdaptiveSettings", "Asked", "LawGuidedSampler", "SearchCell", "SweepStudy",
           "storage_for"]
