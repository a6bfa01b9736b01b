"""The control plane: Faust workers that turn device telemetry, drift sketches and feedback into
window metrics, drift scores and the few decisions that matter (alerts, optimization requests).

Pure logic lives in its own modules (``aggregate``, ``drift``, ``policy``, ``registry``) and is
tested directly; ``app`` is the thin Faust shell around it. Importing this package is cheap: it
imports neither Faust nor prometheus-client.
"""
