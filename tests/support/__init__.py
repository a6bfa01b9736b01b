"""What test modules (and the benchmarks) import, one module per concept.

Fixtures stay in the ``conftest.py`` beside their users; helpers a test imports live here, so
no test module imports another. Modules (import them by name; this package imports nothing):

- ``avro``: the ``.avsc`` files as dicts, and bytes written by plain fastavro (``encode_with``).
- ``control_inputs``: telemetry, feedback and drift sketches with known values.
- ``device``: an offline edge device's settings and the events that tell it what to serve.
- ``hostile``: hostile records for every event type, hand-written and generated from the schemas.
- ``link``: a TCP forwarder to the broker that a test cuts and restores.
- ``live``: a running control worker, events produced in the next window, required tools.
- ``optimizer_sources``: quick recipes and an optimizer worker's sources directory.
- ``ports``: free local TCP ports for servers a test starts.
- ``records``: records read back from the broker, as the events a test expects.
- ``sample_events``: one valid instance of every event type.
- ``tiny_models``: tiny ONNX graphs and tokenizers, packaged as signed artifacts (no torch).
- ``tiny_transformers``: tiny BERT and Llama models from a transformers config.
- ``waiting``: wait for a condition with a deadline (sync and async), never a fixed sleep.
"""
