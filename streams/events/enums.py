"""The enumerations of the contract; each mirrors an Avro enum in ``schemas/``."""

from __future__ import annotations

import enum


class Task(enum.StrEnum):
    """What a model does; decides its input/output signature."""

    CLASSIFY = "CLASSIFY"
    EMBED = "EMBED"
    GENERATE = "GENERATE"


class RolloutStatus(enum.StrEnum):
    """Where a rollout stands; the terminal ones never change again."""

    PENDING = "PENDING"
    PROGRESSING = "PROGRESSING"
    PAUSED = "PAUSED"
    BAKING = "BAKING"
    SUCCEEDED = "SUCCEEDED"
    ROLLING_BACK = "ROLLING_BACK"
    ROLLED_BACK = "ROLLED_BACK"
    ABORTED = "ABORTED"
    INCONCLUSIVE = "INCONCLUSIVE"


class SelectorOperator(enum.StrEnum):
    """A set-based label requirement's operator (the Kubernetes label-selector grammar)."""

    IN = "IN"
    NOT_IN = "NOT_IN"
    EXISTS = "EXISTS"
    DOES_NOT_EXIST = "DOES_NOT_EXIST"


class RolloutCommandKind(enum.StrEnum):
    START = "START"
    PAUSE = "PAUSE"
    RESUME = "RESUME"
    ABORT = "ABORT"
    PROMOTE = "PROMOTE"


class DeviceState(enum.StrEnum):
    STARTING = "STARTING"
    SERVING = "SERVING"
    UPDATING = "UPDATING"
    DEGRADED = "DEGRADED"
    STOPPED = "STOPPED"


class Severity(enum.StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
