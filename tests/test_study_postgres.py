"""Many drivers, one study: SweepStudy on a real PostgreSQL server that the test starts and
stops (Optuna's RDB storage through a postgresql:// URL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from optuna.trial import TrialState

from sweeper.outcome import TrialOutcome
from sweeper.plan import plan_trials
from sweeper.recipe import parse_recipe
from sweeper.schedule import SweepStudy
from tests.conftest import MINIMAL_RECIPE
from tests.postgres import postgres_server, unavailable

# The reason is printed by pytest -rs; CI installs the package (.ci/run), so it runs there.
pytestmark = [
    pytest.mark.slow,  # starts a database server
    pytest.mark.skipif(unavailable() is not None, reason=f"no PostgreSQL server: {unavailable()}"),
]

RECIPE = parse_recipe(
    {
        **MINIMAL_RECIPE,
        "learning_rates": {"values": [1e-3 * (i + 1) for i in range(12)]},
        "batch_sizes": [4, 8],
    }
)
SPECS = plan_trials(RECIPE, "data0")


def _drive_share(url: str, run_dir: str, share: int, shares: int) -> None:
    """One driver: runs every ``shares``-th planned trial, telling the shared study."""
    study = SweepStudy.open("shared", SPECS, Path(run_dir), storage_url=url, sampler_seed=share)
    runnable = {s.trial_id for i, s in enumerate(SPECS) if i % shares == share}
    while (asked := study.next_trial(runnable)) is not None:
        runnable.discard(asked.spec.trial_id)
        study.tell(
            asked,
            TrialOutcome(asked.spec.trial_id, "complete", 3.0 + asked.spec.lr, 3.0, 1, 1, 1.0, 0.0, 1.0),
        )
        if study.unsent >= 4:
            study.flush()
    study.flush()


def test_two_drivers_share_one_study_on_postgresql(tmp_path: Path) -> None:
    with postgres_server() as url:
        # Threads rather than processes (cheaper to start): each driver has its own storage
        # and database connections, and both start on an empty database at once.
        with ThreadPoolExecutor(2) as pool:
            drivers = [pool.submit(_drive_share, url, str(tmp_path / f"d{i}"), i, 2) for i in range(2)]
            for driver in drivers:
                driver.result(timeout=180)
        # A third driver sees both drivers' trials, each once, and has nothing to add.
        study = SweepStudy.open("shared", SPECS, tmp_path / "d2", storage_url=url)
        trials = study.study.get_trials(states=(TrialState.COMPLETE,))
        assert sorted(t.user_attrs["trial_id"] for t in trials) == sorted(s.trial_id for s in SPECS)
        assert study.study.best_trial.params["lr"] == min(s.lr for s in SPECS)
        assert study.reconcile({s.trial_id: ("complete", 3.0) for s in SPECS}) == 0
        assert not (tmp_path / "d2" / "optuna.journal").exists()  # the URL, not a journal file
