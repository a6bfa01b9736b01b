"""Signed records: who may move devices is decided by keys, not by broker access alone.

A registry record (``ModelVersion``, signed by the release key that signs artifacts) or a
rollout state (``RolloutState``, signed by the controller's key) carries an ed25519 signature
of its exact value bytes in two Kafka record headers, ``slmops-sig`` (base64) and
``slmops-key`` (the key's id). Headers leave the Avro contract unchanged, so readers that do
not check signatures read the same records, and any client library can set them.

The signed message is a domain prefix and the value: a signature made for another purpose
(an artifact manifest) never verifies here. The value starts with the schema's fingerprint,
so a signed registry record cannot be replayed as a rollout state.

Pure: no Kafka client. Devices verify with the keys they are configured to trust for each
kind; rotating a key is trusting old and new together for a while (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streams.events.artifact import key_id
from streams.events.errors import StreamsError

SIGNATURE_HEADER = "slmops-sig"
KEY_HEADER = "slmops-key"
DOMAIN = b"slmops record v1\x00"

Headers = Sequence[tuple[str, bytes]]


class RecordSignatureError(StreamsError):
    """A record without a valid signature by a trusted key; the message says which part."""


def sign_record(value: bytes, key: Ed25519PrivateKey) -> list[tuple[str, bytes]]:
    """The headers that sign ``value`` with ``key``."""
    signature = base64.b64encode(key.sign(DOMAIN + value))
    return [(SIGNATURE_HEADER, signature), (KEY_HEADER, key_id(key.public_key()).encode())]


def _header(headers: Headers, name: str) -> bytes | None:
    found = [v for k, v in headers if k == name]
    if len(found) > 1:
        raise RecordSignatureError(f"{len(found)} {name} headers, expected one")
    return found[0] if found else None


def verify_record(value: bytes, headers: Headers, trusted: Mapping[str, Ed25519PublicKey]) -> str:
    """The id of the trusted key that signed ``value``; raises :class:`RecordSignatureError`."""
    signature = _header(headers, SIGNATURE_HEADER)
    if signature is None:
        raise RecordSignatureError("unsigned (no slmops-sig header)")
    named = _header(headers, KEY_HEADER)
    kid = (named or b"").decode("ascii", "replace")[:64]
    public = trusted.get(kid)
    if public is None:
        raise RecordSignatureError(f"signed by key {kid or '(none named)'}, which is not trusted")
    try:
        raw = base64.b64decode(signature, validate=True)
        public.verify(raw, DOMAIN + value)
    except (binascii.Error, ValueError, InvalidSignature) as exc:
        raise RecordSignatureError(f"signature does not verify against key {kid}") from exc
    return kid
