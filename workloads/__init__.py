"""Generated workloads for the demo, benchmarks, tests and the simulated fleet.

Not part of the event contract and not needed in production: it stands in for the data a real
deployment collects. The optimizers train and evaluate on it and the simulated fleet serves
it, so both speak of the same intents. Standard library only.
"""
