from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from streams.control.registry import RegistryView
from streams.events import Artifact, DeviceState, DeviceStatus, ModelVersion, Task

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def mv(version: str, at: datetime, precision: str = "fp32") -> ModelVersion:
    art = Artifact(
        uri=f"file:///{version}",
        sha256=hashlib.sha256(version.encode()).hexdigest(),
        size_bytes=1,
        precision=precision,
    )
    return ModelVersion(
        occurred_at=at, model_id="intent", version=version, task=Task.CLASSIFY, artifacts=(art,)
    )


def ds(device: str, version: str, at: datetime, error: str | None = None) -> DeviceStatus:
    return DeviceStatus(
        occurred_at=at,
        device_id=device,
        cohort="eu",
        hardware_profile="arm64",
        state=DeviceState.SERVING,
        model_id="intent",
        model_version=version,
        last_error=error,
    )


def test_newest_record_per_key_wins_and_rows_count_serving_devices():
    view = RegistryView()
    assert view.apply(mv("v1", T0))
    assert view.apply(mv("v2", T0 + timedelta(hours=1), precision="int8"))
    assert not view.apply(mv("v1", T0 - timedelta(hours=1), precision="int4"))  # older
    assert view.apply(ds("d1", "v1", T0))
    assert view.apply(ds("d1", "v2", T0 + timedelta(minutes=5), error="boom"))
    assert view.apply(ds("d2", "v2", T0))

    rows = {r["version"]: r for r in view.model_rows()}
    assert rows["v1"]["precisions"] == ["fp32"]
    assert (rows["v1"]["devices_serving"], rows["v2"]["devices_serving"]) == (0, 2)
    devices = {r["device_id"]: r for r in view.device_rows()}
    assert devices["d1"]["model"] == "intent:v2"
    assert devices["d1"]["last_error"] == "boom"
    assert [d["version"] for d in view.model_detail("intent")] == ["v1", "v2"]
    assert view.model_rows("other") == []
