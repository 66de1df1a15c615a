"""Execute: Ray tasks that run trials, on a local embedded cluster or an attached one."""

from sweeper.execute.ray_runner import (
    ClusterInfo,
    PlacementError,
    TrialExecutor,
    check_fits,
    connect,
    disconnect,
)

__all__ = ["ClusterInfo", "PlacementError", "TrialExecutor", "check_fits", "connect", "disconnect"]
