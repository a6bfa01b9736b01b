"""Which registry and rollout records a device obeys: with signed_records, registry records
need the release key and rollout states the controller's (everything else is refused with its
reason while the device keeps serving); a yanked version is never installed."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
from pydantic import ValidationError

from edge_runtime.runtime import EdgeRuntime
from edge_runtime.settings import EdgeSettings
from streams.events import Event, default_codec
from streams.events.artifact import new_signing_key, public_key_to_text
from streams.events.record_signing import sign_record
from tests.support.device import promoted, registered, settings
from tests.support.tiny_models import build

CONTROL = new_signing_key()


def signed(event: Event, key) -> tuple[bytes, list[tuple[str, bytes]]]:
    value = default_codec().encode(event)
    return value, sign_record(value, key)


def device(tmp_path, signing_key) -> EdgeRuntime:
    return EdgeRuntime(
        settings(
            tmp_path,
            signing_key,
            signed_records=True,
            trusted_control_keys=[public_key_to_text(CONTROL.public_key())],
        )
    )


def test_only_records_signed_by_their_kind_of_key_move_the_device(tmp_path, signing_key):
    v1 = registered(build(tmp_path, signing_key, version="v1"), 1)
    v2 = registered(build(tmp_path, signing_key, version="v2", favour=2), 2)
    to_v2 = promoted("v2")

    async def scenario() -> list[tuple[str | None, str]]:
        rt = device(tmp_path, signing_key)
        await rt.start_offline()
        seen = []
        try:
            await rt.apply(v1)  # no bytes to check: refused
            seen.append((rt.version, rt.board.refusal or ""))
            await rt.apply(v1, origin=signed(v1, new_signing_key()))  # an unknown key
            seen.append((rt.version, rt.board.refusal or ""))
            await rt.apply(v1, origin=signed(v1, signing_key))
            await rt.apply(v2, origin=signed(v2, signing_key))
            seen.append((rt.version, rt.board.refusal or ""))
            await rt.apply(to_v2, origin=signed(to_v2, signing_key))  # the release key
            seen.append((rt.version, rt.board.refusal or ""))
            value, headers = signed(to_v2, CONTROL)
            await rt.apply(to_v2, origin=(value + b"x", headers))  # bytes changed
            seen.append((rt.version, rt.board.refusal or ""))
            await rt.apply(to_v2, origin=signed(to_v2, CONTROL))
            seen.append((rt.version, ""))
        finally:
            await rt.stop()
        return seen

    seen = asyncio.run(scenario())
    assert seen[0][0] is None
    assert "refused registry record intent:v1: not signed by a trusted key: unsigned" in seen[0][1]
    assert seen[1][0] is None
    assert "which is not trusted" in seen[1][1]
    assert seen[2][0] == "v1"
    assert seen[3][0] == "v1"
    assert "refused rollout r-v2 revision 0: not signed" in seen[3][1]
    assert "not trusted" in seen[3][1]
    assert seen[4][0] == "v1"
    assert "does not verify" in seen[4][1]
    assert seen[5][0] == "v2"


def test_without_signed_records_unsigned_records_are_taken(tmp_path, signing_key):
    v1 = registered(build(tmp_path, signing_key, version="v1"), 1)

    async def scenario() -> str | None:
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        try:
            await rt.apply(v1)
            return rt.version
        finally:
            await rt.stop()

    assert asyncio.run(scenario()) == "v1"


def test_signed_records_without_keys_to_check_them_is_refused_at_start(tmp_path, signing_key):
    with pytest.raises(ValidationError, match="signed_records needs"):
        EdgeSettings(device_id="d", data_dir=tmp_path, signed_records=True)
    with pytest.raises(ValidationError, match="trusted_control_keys"):
        settings(tmp_path, signing_key, signed_records=True)


def test_a_yanked_version_is_never_installed_and_left_where_a_rollout_allows(tmp_path, signing_key):
    v1 = registered(build(tmp_path, signing_key, version="v1"), 1)
    v2 = registered(build(tmp_path, signing_key, version="v2", favour=2), 2)
    to_v2 = dataclasses.replace(promoted("v2"), from_version="v1")

    def yank(mv, minutes):
        return dataclasses.replace(
            mv, yanked="wrong answers", occurred_at=mv.occurred_at + timedelta(minutes=minutes)
        )

    async def scenario() -> list[str | None]:
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        seen = []
        try:
            await rt.apply(yank(v1, 1))  # the only version, yanked: nothing to install
            seen.append(rt.version)
            await rt.apply(v1)  # an older record of v1 does not undo the yank
            seen.append(rt.version)
            await rt.apply(v2)
            seen.append(rt.version)  # the newest shippable version
            await rt.apply(to_v2)
            seen.append(rt.version)
            await rt.apply(yank(v2, 5))  # its rollout offers v1, yanked too: keeps v2
            seen.append(rt.version)
            await rt.apply(dataclasses.replace(v1, occurred_at=v1.occurred_at + timedelta(hours=1)))
            seen.append(rt.version)  # v1 re-registered: the rollout's other version ships
        finally:
            await rt.stop()
        return seen

    assert asyncio.run(scenario()) == [None, None, "v2", "v2", "v2", "v1"]
