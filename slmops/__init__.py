"""slmops: operate small language models on fleets of edge devices.

This package holds the ``slmops`` command line and the local stack launcher; the components
live in ``streams`` (event contract and control plane), ``optimizers`` and ``edge_runtime``.
"""

__version__ = "0.1.0"
