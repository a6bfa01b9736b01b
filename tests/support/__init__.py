"""Helpers shared by test modules of several folders, one module per concept.

Fixtures stay in the ``conftest.py`` beside their users; what a test imports lives here, so no
test module imports another. Modules (import them by name; this package imports nothing):

- ``link``: a TCP forwarder to the broker that a test cuts and restores.
- ``ports``: free local TCP ports for servers a test starts.
- ``waiting``: wait for a condition with a deadline (sync and async), never a fixed sleep.
"""
