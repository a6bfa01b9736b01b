"""The main job on the embedded default: the closed loop, end to end, with real parts.

Local Apache Kafka; a control worker and an optimizer worker as their own processes; a fleet of
real edge runtimes (onnxruntime, verified signed artifacts) in two cohorts, driven by simulated
users whose app reports outcomes as ``Feedback`` — the "other system" of the architecture.

Scenario one: v1 (MiniLM fine-tuned on the clean intents) serves; the users' language shifts;
feedback quality drops; the policy asks for re-optimization; the optimizer fine-tunes on the
consented feedback examples, quantizes and signs v2; the controller rolls v2 out per cohort,
canary then full, while quality recovers. Scenario two: an operator ships a candidate whose
labels are scrambled (validly signed, so only its answers are wrong); the canary's quality gate
fails and the rollout rolls back by itself. The command exits 0 only when every expectation
held, and prints the timeline and the figures it measured.

Modules: ``config`` (the run configuration), ``run`` (the command), ``stage`` (setting up and
tearing down), ``scenarios``, ``observer`` (the topics), ``users`` (the simulated app),
``builds`` (v1 and the scrambled candidate), ``supervision`` (the worker processes) and
``report`` (timeline and checks).
"""

from slmops.demo.config import DemoConfig, RunConfig
from slmops.demo.run import run_demo

__all__ = ["DemoConfig", "RunConfig", "run_demo"]
