"""The demo's workers: started on the run's namespace and clocks; a dead one stops the run."""

from __future__ import annotations

import sys

from edge_runtime.settings import EdgeSettings
from slmops.demo.config import DemoConfig, RunConfig
from slmops.demo.supervision import DemoWorkers, control_worker, optimizer_worker
from slmops.processes import WorkerProcess, wait_for
from streams.events.artifact import new_signing_key, private_key_from_text, public_key_to_text
from streams.kafka.connection import KafkaConnection


def _run(tmp_path, *, signed: bool = True) -> RunConfig:
    conn = KafkaConnection(bootstrap_servers="127.0.0.1:1", topic_prefix="slmops-demo1")
    run = RunConfig(
        demo=DemoConfig(window_s=3.0, web_port=7001),
        conn=conn,
        root=tmp_path,
        keep_running=False,
        say=lambda _message: None,
    )
    if signed:
        run.signed_fleet(new_signing_key().public_key())
    return run


def test_the_demo_fleet_obeys_only_records_signed_by_each_roles_key(tmp_path):
    run = _run(tmp_path, signed=False)
    release = new_signing_key()
    fields = run.signed_fleet(release.public_key())
    env = control_worker(run).env
    assert env is not None
    control = private_key_from_text(env["SLMOPS_CONTROL_SIGNING_KEY"])
    assert fields == {
        "trusted_keys": [public_key_to_text(release.public_key())],
        "trusted_control_keys": [public_key_to_text(control.public_key())],
        "signed_records": True,
    }
    device = EdgeSettings(device_id="dev-0", data_dir=tmp_path / "dev", **fields)
    assert device.signed_records


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_workers_use_the_runs_namespace_files_and_clocks(tmp_path):
    run = _run(tmp_path)
    control = control_worker(run).command
    assert _flag(control, "--topic-prefix") == "slmops-demo1"
    assert _flag(control, "--app-id") == "slmops-demo1-control"
    assert _flag(control, "--web-port") == "7001"
    assert _flag(control, "--grace-s") == "5.0"  # one telemetry window late is still on time
    assert _flag(control, "--rollout-cohorts") == "pilot,general"
    optimizer = optimizer_worker(run).command
    assert optimizer[1:5] == ["-m", "slmops", "optimizer", "worker"]
    assert _flag(optimizer, "--signing-key") == str(tmp_path / "signing.key")


def test_a_worker_that_exited_is_the_runs_problem(tmp_path):
    run = _run(tmp_path)
    workers = DemoWorkers(run)
    assert workers.problem() is None  # not started: nothing died
    exits = [sys.executable, "-c", "import sys; sys.exit(2)"]
    crash = WorkerProcess("optimizer worker", exits, run.logs / "optimizer.log").start()
    workers.workers = [crash]
    wait_for("the exit", lambda: crash.returncode is not None, timeout_s=30)
    assert workers.problem() == f"the optimizer worker exited with 2 (log: {run.logs})"
    workers.stop()
