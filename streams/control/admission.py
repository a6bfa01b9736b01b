"""What the control worker refuses in a record the contract accepts, for ``slmops validate``.

It runs the checks stage 1 runs when it adds a record to its window (the ``add_*`` methods of
:class:`~streams.control.aggregate.WindowAggregate`), so a record refused here is dead-lettered
by the worker with the same reason.

The contract (schemas and :mod:`streams.events.limits`) says what a record may hold; aggregation
adds rules that only make sense across records: histograms on the fleet's shared bounds (or
they could not be merged exactly), embedding values and sums within the fixed-point range.
Pure: an event in, the :class:`AggregationError` stage 1 would dead-letter it with, or None.
"""

from __future__ import annotations

from streams.control.aggregate import WindowAggregate
from streams.control.errors import AggregationError
from streams.events import DriftSketch, Event, Feedback, Telemetry


def aggregation_refusal(event: Event) -> AggregationError | None:
    """Why stage 1 refuses ``event`` when adding it to its window, or None (other types:
    the worker does not aggregate them)."""
    window = WindowAggregate()
    try:
        if isinstance(event, Telemetry):
            window.add_telemetry(event)
        elif isinstance(event, DriftSketch):
            window.add_drift(event)
        elif isinstance(event, Feedback):
            window.add_feedback(event)
    except AggregationError as exc:
        return exc
    return None
