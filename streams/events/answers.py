"""How a command finds its answer: the answer's event id is derived from the command's.

The rollout controller answers every ``RolloutCommand`` it reads with exactly one event: the
``RolloutState`` the command produced, or an ``Alert`` saying why it was refused or why nothing
changed. That event's ``event_id`` is ``uuid5(ANSWERS, command.event_id)``, so whoever sent the
command (the CLI, a pipeline in another language) waits for one known id on the rollouts and
alerts topics instead of guessing from timing which record belongs to it.
"""

from __future__ import annotations

import uuid

ANSWERS = uuid.UUID("5c3f2a7e-8d1b-4e0a-9f6c-2b7d4e1a0c93")
"""The namespace of answer ids; part of the contract (docs/control-plane.md)."""


def answer_id(command_event_id: str) -> str:
    """The ``event_id`` of the controller's answer to the command with ``command_event_id``."""
    return str(uuid.uuid5(ANSWERS, command_event_id))
