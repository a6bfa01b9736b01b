"""The demo's worker processes: an optimizer worker and a control worker, as deployed.

Both run as their own processes (``slmops.processes``) with the demo's namespace, files and
clocks; a scenario step that waits asks ``problem()`` first, so a worker that died ends the run
with its exit status and where its log is, not with a timeout minutes later.
"""

from __future__ import annotations

from slmops.demo.config import RunConfig
from slmops.processes import WorkerProcess, control_worker_command


def optimizer_worker(run: RunConfig) -> WorkerProcess:
    """Builds re-optimization requests under the run's root, signed with the run's key."""
    return WorkerProcess("optimizer worker", run.optimizer_command(), run.logs / "optimizer.log")


def control_worker(run: RunConfig) -> WorkerProcess:
    """The control plane with policy and rollout settings scaled to the demo's clocks."""
    config = run.demo
    command = control_worker_command(
        run.conn,
        app_id=f"{run.conn.topic_prefix}-control",
        worker_id="control-1",
        web_port=config.web_port,
        data_dir=run.root / "control",
        extra=[
            # Devices publish a telemetry window when it ends: the grace covers one of them.
            "--window-s", str(config.window_s), "--grace-s", str(config.window_s + 2),
            "--min-quality", str(config.min_quality), "--min-feedback", "30",
            # Sixteen simulated devices, a Kafka broker, two workers and training share two
            # cores here: tail latency measures the machine, so only quality is judged.
            "--max-p95-ms", "60000", "--rollout-no-relative-latency",
            "--min-requests", "30", "--cooldown-windows", "1000",
            "--rollout-cohorts", ",".join(config.cohorts),
            "--rollout-stages", ",".join(f"{s:g}" for s in config.stages),
            "--rollout-window-s", str(config.rollout_window_s),
            "--rollout-bake-s", str(config.bake_s),
            "--rollout-stage-deadline-s", str(config.rollout_window_s * 8),
            "--rollout-rollback-timeout-s", "120",
            "--rollout-min-requests", "50", "--rollout-min-devices", "1",
            "--rollout-min-feedback", "30",
            "--rollout-min-quality", str(config.min_quality - 0.1),
            "--rollout-tick-s", "1",
        ],
    )  # fmt: skip
    log = run.logs / "control.log"
    return WorkerProcess(
        "control worker", command, log, port=config.web_port, env=run.control_env()
    )


class DemoWorkers:
    """The run's two workers: started in order, watched while the scenarios wait, stopped."""

    def __init__(self, run: RunConfig, workers: list[WorkerProcess] | None = None) -> None:
        """``workers``: another act's processes; default the classifier act's two."""
        self.run = run
        self.workers = (
            workers if workers is not None else [optimizer_worker(run), control_worker(run)]
        )

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def problem(self) -> str | None:
        """Why the run cannot go on: a worker that exited; None while both run."""
        for worker in self.workers:
            if worker.returncode is not None:
                return f"the {worker.name} exited with {worker.returncode} (log: {self.run.logs})"
        return None

    def stop(self) -> None:
        """SIGTERM each (then SIGKILL); one that never started is skipped."""
        for worker in self.workers:
            worker.stop()
