"""The serving slot: one model version behind an atomic reference, swapped without downtime.

A new version is loaded and warmed up beside the one serving; only when its self-test passes
does the reference move. A request takes a lease on whatever model the reference names when it
starts and finishes on that model, so a swap never fails or re-routes a request in flight. The
old model refuses new leases, waits for its last request and then drops its session.

Because the reference only ever moves forward, a client that waits for each answer before
asking again sees versions in installation order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from edge_runtime.adapter import Adapter
from edge_runtime.errors import InferenceError, NoModelError
from edge_runtime.hardware import HardwareProfile
from edge_runtime.lane import Served, ServingLane
from edge_runtime.model import InferenceResult, LoadedModel
from streams.events.artifact import Manifest

log = logging.getLogger(__name__)


def prepare(
    directory: Path, manifest: Manifest, profile: HardwareProfile, *, sha256: str = ""
) -> LoadedModel:
    """Load and self-test a model; raises :class:`WarmUpError` when it must not serve."""
    model = LoadedModel(directory, manifest, profile, sha256=sha256)
    model.warm_up()
    return model


class ModelSlot:
    """Serves one model id; holds at most one current version."""

    def __init__(
        self,
        model_id: str,
        *,
        drain_timeout_s: float = 30.0,
        lane: ServingLane | None = None,
        served: Served | None = None,
        load_aside: bool = False,
    ) -> None:
        self.model_id = model_id
        self.drain_timeout_s = drain_timeout_s
        self.served = served
        """Told of every request :meth:`ainfer` answers (the lane's own hook for its own)."""
        self.lane = lane
        """Serves batchable models (CLASSIFY, EMBED) in micro-batches; without one, or for
        GENERATE, each request runs on a thread of its own."""
        self.load_aside = load_aside
        """Whether one of the lane's threads stands aside while a new version loads (for
        serving threads that fill the cores: see :meth:`ServingLane.stand_aside`)."""
        self._current: LoadedModel | None = None
        self._swap_lock = threading.Lock()
        self.swaps = 0
        self.adapter_switches = 0
        self.swapped_at: float | None = None
        """``time.perf_counter()`` when the current version began to serve: :meth:`install`
        returns later, once the old version has drained and been released."""

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def version(self) -> str | None:
        model = self._current
        return model.version if model else None

    def lease(self) -> LoadedModel:
        """The current model, leased: the caller must ``release()`` it when done."""
        while True:
            model = self._current
            if model is None:
                raise NoModelError(self.model_id)
            if model.acquire():
                return model
            # Closed between reading the reference and leasing: the reference has moved on.

    def infer(self, texts: Sequence[str], *, max_new_tokens: int | None = None) -> InferenceResult:
        """Run a batch on the current model; blocking, safe from any thread."""
        model = self.lease()
        try:
            return model.run(texts, max_new_tokens=max_new_tokens)
        finally:
            model.release()

    async def ainfer(
        self, texts: Sequence[str], *, max_new_tokens: int | None = None
    ) -> InferenceResult:
        """Run a batch without blocking the event loop (onnxruntime releases the GIL)."""
        model = self.lease()
        if self.lane is not None and model.batchable:
            return await self.lane.run(model, texts)  # the lane releases the lease
        try:
            return await asyncio.to_thread(self._run, model, texts, max_new_tokens)
        finally:
            model.release()

    def _run(
        self, model: LoadedModel, texts: Sequence[str], max_new_tokens: int | None
    ) -> InferenceResult:
        started = time.perf_counter()
        try:
            result = model.run(texts, max_new_tokens=max_new_tokens)
        except InferenceError as exc:
            if self.served is not None:
                self.served(model, exc, (time.perf_counter() - started) * 1000)
            raise
        if self.served is not None:
            self.served(model, result, (time.perf_counter() - started) * 1000)
        return result

    def swap(self, new: LoadedModel) -> LoadedModel | None:
        """Point the slot at ``new``; return the model it replaces (still draining)."""
        with self._swap_lock:
            old, self._current = self._current, new
            self.swaps += 1
            self.swapped_at = time.perf_counter()
        log.info(
            "swapped model=%s from=%s to=%s",
            self.model_id,
            old.version if old else None,
            new.version,
        )
        return old

    async def install(
        self, directory: Path, manifest: Manifest, profile: HardwareProfile, *, sha256: str = ""
    ) -> LoadedModel:
        """Load, warm up, swap, then release the old model once its requests are done.

        Raises :class:`WarmUpError` before touching the slot when the new model fails.
        """
        aside = (
            self.lane.stand_aside()
            if self.lane is not None and self.load_aside
            else contextlib.nullcontext()
        )
        with aside:
            new = await asyncio.to_thread(prepare, directory, manifest, profile, sha256=sha256)
        old = self.swap(new)
        if old is not None:
            drained = await asyncio.to_thread(old.close, self.drain_timeout_s)
            if not drained:
                log.warning(
                    "old model still busy after drain timeout model=%s version=%s",
                    self.model_id,
                    old.version,
                )
        return new

    async def switch_adapter(self, adapter: Adapter | None) -> LoadedModel:
        """Serve ``adapter`` over the current base without reloading it (``None``: the base).

        Raises :class:`AdapterRefused` (nothing changes) when it does not fit the base, and
        :class:`NoModelError` when no base is installed. Requests in flight finish on the
        adapter they started with.
        """
        model = self.lease()
        try:
            previous = model.adapter
            await asyncio.to_thread(model.apply_adapter, adapter)
        finally:
            model.release()
        self.adapter_switches += 1
        log.info(
            "switched adapter model=%s version=%s from=%s to=%s",
            self.model_id,
            model.version,
            previous.name if previous else None,
            adapter.name if adapter else None,
        )
        return model

    def close(self) -> None:
        model, self._current = self._current, None
        if self.lane is not None:
            self.lane.close(self.drain_timeout_s)
        if model is not None:
            model.close(self.drain_timeout_s)
