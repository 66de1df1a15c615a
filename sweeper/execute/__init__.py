"""Execute: Ray tasks that run trials, on a local embedded cluster or an attached one."""

from sweeper.execute.ray_runner import ClusterInfo, TrialExecutor, connect, disconnect

__all__ = ["ClusterInfo", "TrialExecutor", "connect", "disconnect"]
