"""Kafka I/O without Faust, importable by every deployable.

- ``connection``: how a component reaches the cluster (brokers, prefix, TLS, SASL) and the
  settings fields every deployable shares;
- ``clients``: the typed producer and consumer (undecodable records are dead-lettered) and
  ``read_current`` for the state of compacted topics;
- ``admin``: waiting for the broker, creating the catalog's topics with their configs;
- ``publish``: parsing and validating JSON events for ``slmops publish``;
- ``arguments``: the argument types every deployable's command line shares;
- ``errors``: every aiokafka error wrapped (missing topic, failed send, lost connection);
  no package outside this one imports aiokafka;
- ``internals``: the two private aiokafka/Faust attributes slmops relies on, in one place.
"""
