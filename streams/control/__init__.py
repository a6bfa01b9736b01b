"""The control plane: Faust workers that turn device telemetry, drift sketches and feedback into
window metrics, drift scores and the few decisions that matter (alerts, optimization requests),
and that steer staged rollouts.

Pure logic, tested directly without Faust:

* ``aggregate`` (window aggregates with an exact merge), ``windows`` (the two stages'
  bookkeeping), ``drift``, ``policy`` (per-window judgement and incidents);
* ``messages``: the typed records the stages send each other over the internal topics;
* ``status`` (the rows of ``/status``), ``status_page`` (the page drawing them), ``metrics``;
* ``limits``: the caps on state and writes (fold into ``other`` or refuse, size checks);
* ``registry`` and ``ledger``: models and devices as read from their topics;
* ``rollouts/``: the rollout state machine, its gates and statistics, and the controller.

The worker around it: ``intake`` (stage 1, source events into partials), ``merge`` (stage 2,
final windows judged), ``decisions`` (alerts and optimization requests), ``rollout_agents``
(what feeds the controller), ``dead_letters`` and ``guard`` (the caps where the worker
writes). Only the shell imports Faust: ``app`` builds
and wires the Faust app, ``avro_schema`` decodes the contract's topics, ``runner`` runs it.
``settings``, ``errors``, ``cli`` and ``__main__`` are the edges. Importing this package is
cheap: it imports neither Faust nor prometheus-client.
"""
