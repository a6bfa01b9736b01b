"""Kafka I/O without Faust, importable by every deployable."""
