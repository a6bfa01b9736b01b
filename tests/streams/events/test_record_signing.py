"""Signatures of record bytes in Kafka headers: what verifies, what does not, and rotation."""

from __future__ import annotations

import base64

import pytest

from streams.events import ModelVersion, RolloutState, default_codec
from streams.events.artifact import key_id, new_signing_key, sign
from streams.events.record_signing import (
    KEY_HEADER,
    SIGNATURE_HEADER,
    RecordSignatureError,
    sign_record,
    verify_record,
)
from tests.support.sample_events import sample

OLD, NEW, OTHER = new_signing_key(), new_signing_key(), new_signing_key()
VALUE = default_codec().encode(sample(RolloutState))


def trusted(*keys):
    return {key_id(k.public_key()): k.public_key() for k in keys}


def test_a_signed_record_verifies_and_names_its_key():
    headers = sign_record(VALUE, OLD)
    assert [name for name, _ in headers] == [SIGNATURE_HEADER, KEY_HEADER]
    assert verify_record(VALUE, headers, trusted(OLD)) == key_id(OLD.public_key())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda v, h: (v[:-1] + bytes([v[-1] ^ 1]), h), "does not verify"),
        (lambda v, h: (v + b"\x00", h), "does not verify"),
        (lambda v, h: (v, []), "unsigned"),
        (lambda v, h: (v, [h[0]]), "not trusted"),
        (lambda v, h: (v, [h[0], (KEY_HEADER, b"0" * 16)]), "not trusted"),
        (lambda v, h: (v, [(SIGNATURE_HEADER, b"!!"), h[1]]), "does not verify"),
        (lambda v, h: (v, [*h, h[0]]), "2 slmops-sig headers"),
    ],
)
def test_a_changed_record_or_header_is_refused(change, reason):
    value, headers = change(VALUE, sign_record(VALUE, OLD))
    with pytest.raises(RecordSignatureError, match=reason):
        verify_record(value, headers, trusted(OLD))


def test_a_key_nobody_trusts_is_refused_even_with_a_valid_signature():
    with pytest.raises(RecordSignatureError, match="not trusted"):
        verify_record(VALUE, sign_record(VALUE, OTHER), trusted(OLD, NEW))


def test_a_signature_made_for_something_else_never_verifies_here():
    # An artifact manifest's signature over the same bytes is not a record signature.
    raw = base64.b64decode(sign(VALUE, OLD))
    headers = [
        (SIGNATURE_HEADER, base64.b64encode(raw)),
        (KEY_HEADER, key_id(OLD.public_key()).encode()),
    ]
    with pytest.raises(RecordSignatureError, match="does not verify"):
        verify_record(VALUE, headers, trusted(OLD))


def test_a_signed_registry_record_is_not_a_rollout_state():
    registry = default_codec().encode(sample(ModelVersion))
    headers = sign_record(registry, OLD)
    assert verify_record(registry, headers, trusted(OLD))
    with pytest.raises(RecordSignatureError):
        verify_record(VALUE, headers, trusted(OLD))


def test_rotation_is_an_overlap_of_trusted_keys():
    before, after = sign_record(VALUE, OLD), sign_record(VALUE, NEW)
    # 1. devices trust both; 2. the signer switches to NEW; 3. devices drop OLD.
    both = trusted(OLD, NEW)
    assert verify_record(VALUE, before, both) == key_id(OLD.public_key())
    assert verify_record(VALUE, after, both) == key_id(NEW.public_key())
    assert verify_record(VALUE, after, trusted(NEW)) == key_id(NEW.public_key())
    with pytest.raises(RecordSignatureError, match="not trusted"):
        verify_record(VALUE, before, trusted(NEW))
