"""Everything that travels on Kafka, in three rooms; each room's docstring describes it.

- :mod:`streams.events` — the event contract: schemas, typed records, codec, topic catalog,
  artifact format, membership, histograms. Every deployable and every other system may use
  it; it imports no Kafka client and no Faust.
- :mod:`streams.kafka` — Kafka I/O over aiokafka without Faust (producer, consumer, admin,
  the publisher, connection settings). Every deployable may use it.
- :mod:`streams.control` — the control plane (Faust workers, rollouts, ledger). Only control
  workers and the operator CLI import it.

import-linter checks these boundaries in ``make lint`` (``[tool.importlinter]`` in
pyproject.toml), and tests/lint/test_import_contracts.py proves each contract can fail.
"""
