"""Fixtures of the edge runtime tests: a signing key and its trusted public half."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streams.events.artifact import key_id, new_signing_key


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return new_signing_key()


@pytest.fixture(scope="session")
def trusted(signing_key: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    public = signing_key.public_key()
    return {key_id(public): public}
