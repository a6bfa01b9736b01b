"""Errors raised by the edge runtime.

The tree, so a caller can pick what to catch::

    EdgeRuntimeError             root of everything below
    ├── ConfigError              a device setting that cannot work (unknown profile, bad key)
    ├── ModelRefused             a model version this device will not serve; ``reason`` says why
    │   ├── FetchError           the artifact could not be downloaded (network, size limit)
    │   ├── VerificationError    the bytes are not what the registry and a trusted key vouch for
    │   ├── WarmUpError          it verified but failed to load or failed its self-test
    │   ├── AdapterRefused       a LoRA adapter that does not fit the base this device serves
    │   └── DiskFullError        no room to download or unpack it; retried once there is room
    ├── NoModelError             a request arrived before any model was installed
    └── InferenceError           the serving session failed on a request

Errors carry their context as fields and build their own message; the device status shows
``reason`` as it is, so it is written for an operator.
"""

from __future__ import annotations


class EdgeRuntimeError(Exception):
    """Root of the edge runtime's errors."""


class ConfigError(EdgeRuntimeError):
    """A device setting that cannot work."""

    def __init__(self, setting: str, reason: str) -> None:
        self.setting = setting
        self.reason = reason
        super().__init__(f"{setting}: {reason}")


class ModelRefused(EdgeRuntimeError):
    """A model version this device will not serve; the last good model keeps serving."""

    stage = "refused"

    def __init__(self, model_id: str, version: str, reason: str) -> None:
        self.model_id = model_id
        self.version = version
        self.reason = reason
        super().__init__(f"{model_id}:{version} {self.stage}: {reason}")


class FetchError(ModelRefused):
    """The artifact could not be downloaded."""

    stage = "fetch failed"

    def __init__(self, model_id: str, version: str, reason: str, *, uri: str) -> None:
        self.uri = uri
        super().__init__(model_id, version, reason)


class VerificationError(ModelRefused):
    """The artifact's bytes, files or signature do not check out."""

    stage = "failed verification"


class WarmUpError(ModelRefused):
    """The model verified but did not load or failed its self-test."""

    stage = "failed warm-up"


class AdapterRefused(ModelRefused):
    """A LoRA adapter for another base, of the wrong shapes, or that fails its trial run."""

    stage = "adapter refused"


class DiskFullError(ModelRefused):
    """No room to download or unpack the version; unlike other refusals it is retried."""

    stage = "refused for lack of disk space"

    def __init__(self, model_id: str, version: str, reason: str, *, path: str) -> None:
        self.path = path
        super().__init__(model_id, version, reason)


class NoModelError(EdgeRuntimeError):
    """No model is installed yet."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        super().__init__(f"no version of model {model_id!r} is installed yet")


class InferenceError(EdgeRuntimeError):
    """The session failed on a request."""

    def __init__(self, model_id: str, version: str, reason: str) -> None:
        self.model_id = model_id
        self.version = version
        self.reason = reason
        super().__init__(f"{model_id}:{version} inference failed: {reason}")
