"""Staged rollouts, as pure logic the controller's Faust shell drives.

- ``state``: one rollout's state, mapped one to one onto its ``RolloutState`` event;
  ``policy``: timing and gates (the controller's configuration); ``inputs``: what the machine
  takes (commands, window results, ticks) and the effects it asks for;
- ``machine``: ``transition(rollout, input, now) -> Step``, the whole behaviour
  (docs/rollouts.md has the table); ``registry``: every rollout, one per model and cohort;
- ``statistics`` and ``gates``: judging a canary window against the stable group and SLOs;
- ``canary``: a stage's evidence accumulated over windows; ``controller``: commands, closed
  windows and ticks in, state changes and alerts out.

No I/O and no clock: the Faust shell (``streams.control.app``) passes both in.
"""
