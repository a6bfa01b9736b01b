from __future__ import annotations

import dataclasses
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


def test_rows_say_which_cohorts_serve_a_version_and_which_base_an_adapter_applies_to():
    view = RegistryView()
    base = mv("v1", T0)
    view.apply(base)
    for version, minutes in (("v2", 1), ("v3", 2)):
        adapter = Artifact(
            uri=f"file:///{version}",
            sha256=hashlib.sha256(version.encode()).hexdigest(),
            size_bytes=1,
            format="onnx-adapter",
            base_sha256=base.artifacts[0].sha256,
        )
        view.apply(
            ModelVersion(
                occurred_at=T0 + timedelta(minutes=minutes),
                model_id="intent",
                version=version,
                task=Task.GENERATE,
                artifacts=(adapter,),
            )
        )
    orphan = Artifact(
        uri="file:///v9", sha256="c" * 64, size_bytes=1, format="onnx-adapter", base_sha256="d" * 64
    )
    view.apply(
        ModelVersion(
            occurred_at=T0, model_id="intent", version="v9", task=Task.GENERATE, artifacts=(orphan,)
        )
    )
    for device, cohort, version in (
        ("a", "pilot", "v2"),
        ("b", "pilot", "v2"),
        ("c", "beta", "v3"),
    ):
        view.apply(dataclasses.replace(ds(device, version, T0), cohort=cohort))
    rows = {r["version"]: r for r in view.model_rows()}
    assert rows["v1"]["adapter_of"] is None
    assert (rows["v2"]["adapter_of"], rows["v3"]["adapter_of"]) == ("v1", "v1")
    assert rows["v9"]["adapter_of"] == "d" * 12  # its base is not registered
    assert rows["v2"]["cohorts"] == ["pilot (2)"]
    assert rows["v3"]["cohorts"] == ["beta (1)"]
    assert rows["v1"]["cohorts"] == []
