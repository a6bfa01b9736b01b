"""Hardware profiles: how a class of device runs onnxruntime sessions.

A profile name travels in rollouts (cohort selectors) and artifacts (which build suits which
devices), so the name is the contract; the thread counts and optimization level are local.
"""

from __future__ import annotations

from typing import Literal

import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field

from edge_runtime.errors import ConfigError

GraphOptimization = Literal["disable", "basic", "extended", "all"]

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class HardwareProfile(BaseModel):
    """Session settings for one class of device."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    intra_op_threads: int = Field(default=1, ge=0, description="0 lets onnxruntime decide")
    inter_op_threads: int = Field(default=1, ge=0)
    graph_optimization: GraphOptimization = "all"
    max_batch: int = Field(default=32, ge=1, description="larger requests are refused")
    allow_spinning: bool = Field(
        default=False,
        description="let onnxruntime's threads spin between operators: on a device whose "
        "cores serve only the model, decoding ran 1.5-1.7x faster (SmolLM2 int4); off by "
        "default because sessions side by side during a swap, and anything else on the "
        "device, then fight for the cores",
    )
    kv_engine: Literal["onnxruntime", "onnxruntime-genai"] = Field(
        default="onnxruntime",
        description="what decodes KV-cache builds: the IO-binding loop on onnxruntime "
        "(releases the GIL) or onnxruntime-genai's generator (docs/decisions.md)",
    )

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.graph_optimization_level = _LEVELS[self.graph_optimization]
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Several sessions live side by side during a swap; onnxruntime's own thread spinning
        # would make them fight for the few cores an edge device has (see allow_spinning).
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if self.allow_spinning else "0"
        )
        options.log_severity_level = 3
        return options


# Built-in profiles; code that builds an EdgeRuntime may pass more (``profiles=``).
PROFILES: dict[str, HardwareProfile] = {
    p.name: p
    for p in (
        HardwareProfile(name="cpu-small", intra_op_threads=1, graph_optimization="extended"),
        HardwareProfile(name="cpu-medium", intra_op_threads=2, graph_optimization="all"),
        HardwareProfile(name="cpu-large", intra_op_threads=4, inter_op_threads=2, max_batch=64),
        # A device whose cores serve only the model (a generator, say): every core, spinning.
        HardwareProfile(name="cpu-dedicated", intra_op_threads=0, allow_spinning=True),
    )
}


def profile_named(name: str, extra: dict[str, HardwareProfile] | None = None) -> HardwareProfile:
    known = {**PROFILES, **(extra or {})}
    try:
        return known[name]
    except KeyError:
        raise ConfigError(
            "hardware_profile", f"unknown profile {name!r}; known: {', '.join(sorted(known))}"
        ) from None
