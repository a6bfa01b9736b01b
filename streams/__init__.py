"""The event contract and the control plane.

Pure contract modules (no Faust, no Kafka client) that every deployable may import:
``streams.events`` (schemas, typed records, codec), ``streams.topics`` (catalog),
``streams.artifact`` (signed model artifacts), ``streams.histograms``, ``streams.dead_letter``,
``streams.errors``. Kafka I/O without Faust: ``streams.kafka_io``, ``streams.admin``.
The Faust control plane lives in ``streams.control`` and only the control workers import it.
"""
