"""One installed model version, ready to serve: its onnxruntime session and tokenizer.

The manifest says how to run the model. Conventions the runtime relies on:

- inputs: ``input_ids`` (int64, batch x sequence) and, when the graph declares it,
  ``attention_mask``; tokenization comes from the artifact's own ``tokenizer.json`` so a
  device needs no hub and no network to serve;
- CLASSIFY: the first output holds class probabilities (or logits when its name says so) with
  one column per manifest label; an optional second output is a pooled hidden state, used only
  for the on-device drift sketch;
- EMBED: the first output is the embedding (batch x dim);
- GENERATE: a causal LM, built with a KV cache for onnxruntime-genai (manifest ``engine``)
  or without one for plain onnxruntime (see :mod:`edge_runtime.generation`); served whole per
  text by :meth:`LoadedModel.run` or streamed by :meth:`LoadedModel.stream`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from edge_runtime import adapter as adapters
from edge_runtime.answer_check import check_answer
from edge_runtime.chat import ChatError, ChatTemplate
from edge_runtime.decoding import ParameterError, SamplingParams
from edge_runtime.errors import AdapterRefused, InferenceError, WarmUpError
from edge_runtime.generation import (
    DEFAULT_MAX_NEW_TOKENS,
    MAX_NEW_TOKENS_CAP,
    CachelessDecoder,
    CausalSignature,
    Decoder,
    Delta,
    Done,
    GenaiDecoder,
    Generation,
    SignatureError,
    check_budget,
    eos_ids,
    greedy,
    stream,
)
from edge_runtime.hardware import HardwareProfile
from edge_runtime.kv_decoder import AdaptedDecoder, BuildError, GraphSpec, KvCacheDecoder
from streams.events.artifact import LORA_LAYOUT, Manifest, graph_digest

log = logging.getLogger(__name__)

# Inputs of the warm-up self-test: short, empty-ish and overlong, so padding and truncation
# are exercised before any real request sees the model.
SELF_TEST_TEXTS = ("warm up self test", "", "long " * 600)
# A GENERATE self-test decodes this many tokens per self-test text.
SELF_TEST_NEW_TOKENS = 4
# Tokenizing a text only to keep max_length of its tokens costs memory in proportion to the
# whole text (a 4 MiB text: about 500 MB of encodings). So a text is first cut to this many
# characters per token of max_length (keeping its end for GENERATE), a cut that only shows
# on text averaging more characters per token than this.
CHARS_PER_TOKEN_BOUND = 32

FloatArray = npt.NDArray[np.float32]


@dataclasses.dataclass(frozen=True, slots=True)
class Prediction:
    """One text's output: a label and its confidence (CLASSIFY), a vector (EMBED), or
    generated text (GENERATE: ``confidence`` is the mean probability of the chosen tokens,
    ``finish_reason`` is ``eos``, ``length`` or ``empty`` for a prompt with no tokens)."""

    label: str | None = None
    confidence: float | None = None
    embedding: FloatArray | None = dataclasses.field(default=None, compare=False)
    """A read-only row of the batch's output: no per-float Python objects on the hot path."""
    text: str | None = None
    token_ids: tuple[int, ...] = ()
    finish_reason: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class InferenceResult:
    """A batch's outputs, tagged with the version that computed them.

    ``token_counts`` (input tokens), ``output_token_counts`` (GENERATE) and ``features`` feed
    the local telemetry and drift sketch; they never leave the device as they are.
    """

    model_id: str
    version: str
    predictions: tuple[Prediction, ...]
    token_counts: tuple[int, ...]
    class_indices: tuple[int, ...]
    features: FloatArray
    n_classes: int = 0
    output_token_counts: tuple[int, ...] = ()


class LoadedModel:
    """A session plus tokenizer for one verified model directory.

    Thread-safe: onnxruntime sessions accept concurrent ``run`` calls, and the lease counter
    lets a model slot release the session only once the last in-flight request is done.
    """

    def __init__(
        self, directory: Path, manifest: Manifest, profile: HardwareProfile, *, sha256: str = ""
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.profile = profile
        self.sha256 = sha256
        self.model_id = manifest.model_id
        self.base_version = manifest.version
        self._leases = 0
        self._closed = False
        self._lock = threading.Condition()
        if manifest.task == "CLASSIFY" and not manifest.labels:
            raise self._refuse("a CLASSIFY manifest must list its labels")
        if not manifest.tokenizer_file:
            raise self._refuse("the manifest names no tokenizer file")
        self._session: ort.InferenceSession | None = None
        self._batchable = False
        self._engine: Any = None
        self._decoder: Decoder | None = None
        self.chat_template: ChatTemplate | None = None
        self.base_digest = graph_digest(manifest.files, manifest.model_file)
        """What a LoRA adapter must name as its base to apply here."""
        self._active: tuple[adapters.Adapter, AdaptedDecoder] | None = None
        if manifest.engine == "onnxruntime-genai" and manifest.task != "GENERATE":
            raise self._refuse("engine onnxruntime-genai serves GENERATE models only")
        encoder = manifest.task != "GENERATE" and manifest.engine != "onnxruntime-genai"
        entry = manifest.files.get(manifest.tokenizer_file)
        shared_key = (entry.sha256, manifest.max_length) if encoder and entry else None
        shared = _shared_tokenizer(shared_key)
        try:
            self._tokenizer = (
                shared
                if shared is not None
                else Tokenizer.from_file(str(directory / manifest.tokenizer_file))
            )
        except Exception as exc:  # tokenizers raises plain Exception for a bad file
            raise self._refuse(f"could not load {manifest.tokenizer_file}: {exc}") from exc
        if manifest.engine == "onnxruntime-genai":
            self._prepare_genai(directory, manifest, profile)
            return
        try:
            self._session = ort.InferenceSession(
                str(directory / manifest.model_file),
                sess_options=profile.session_options(),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise self._refuse(f"onnxruntime could not load the model: {exc}") from exc
        if manifest.task == "GENERATE":
            self._prepare_generate(self._session, manifest)
            return
        if shared is None:
            self._tokenizer.enable_truncation(max_length=manifest.max_length)
            pad_id = self._tokenizer.token_to_id("[PAD]")
            self._tokenizer.enable_padding(pad_id=pad_id or 0, pad_token="[PAD]")
            _keep_tokenizer(shared_key, self._tokenizer)
        padding = self._tokenizer.padding or {}
        self._pad = (int(padding.get("pad_id", 0)), str(padding.get("pad_token", "[PAD]")))
        input_names = {i.name for i in self._session.get_inputs()}
        if "input_ids" not in input_names:
            raise self._refuse(f"the graph has no input_ids input (has {sorted(input_names)})")
        self._feed_mask = "attention_mask" in input_names
        outputs = [o.name for o in self._session.get_outputs()]
        self._output_names = outputs
        self._apply_softmax = "logit" in outputs[0].lower()
        batch_dim = self._session.get_inputs()[0].shape[:1]
        self._batchable = not batch_dim or not isinstance(batch_dim[0], int) or batch_dim[0] != 1

    @property
    def session(self) -> ort.InferenceSession | None:
        """The onnxruntime session (None for genai builds and once closed)."""
        return self._session

    @property
    def batchable(self) -> bool:
        """Whether requests may share one session call: CLASSIFY and EMBED graphs with a free
        batch dimension (a GENERATE model decodes each text on its own)."""
        return self._session is not None and self._decoder is None and self._batchable

    def _prepare_generate(self, session: ort.InferenceSession, manifest: Manifest) -> None:
        # A prompt is decoded alone (no padding); an overlong one keeps its end, which is what
        # the continuation depends on.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=manifest.max_length, direction="left")
        try:
            signature = CausalSignature.resolve(session, manifest)
        except SignatureError as exc:
            raise self._refuse(str(exc)) from exc
        self._decoder = CachelessDecoder(
            session,
            signature,
            vocab_size=self._tokenizer.get_vocab_size(with_added_tokens=True),
            eos=eos_ids(self._tokenizer, manifest),
            context_length=manifest.max_length,
        )
        self._load_chat_template()

    def _prepare_genai(self, directory: Path, manifest: Manifest, profile: HardwareProfile) -> None:
        """A KV-cache build, decoded by the loop the hardware profile names (``kv_engine``)."""
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        vocab = self._tokenizer.get_vocab_size(with_added_tokens=True)
        try:
            spec = GraphSpec.load(directory)
            if spec.vocab_size < vocab:
                raise BuildError(
                    f"the graph's vocabulary ({spec.vocab_size}) is smaller than the "
                    f"tokenizer's ({vocab})"
                )
            eos = eos_ids(self._tokenizer, manifest) | spec.eos
            context = min(spec.context_length, manifest.max_length)
            if profile.kv_engine == "onnxruntime":
                options = profile.session_options()
                if (directory / LORA_LAYOUT).exists():
                    # A LoRA-ready build's zero defaults are initializers listed as inputs on
                    # purpose; onnxruntime warns once per tensor about exactly that.
                    options.log_severity_level = 3
                self._session = ort.InferenceSession(
                    str(directory / spec.filename),
                    sess_options=options,
                    providers=["CPUExecutionProvider"],
                )
                self._decoder = KvCacheDecoder(
                    self._session, spec, vocab_size=vocab, eos=eos, context_length=context
                )
            else:
                import onnxruntime_genai as og

                og_config = og.Config(str(directory))
                og_config.overlay(json.dumps(_genai_session_overlay(profile)))
                self._engine = og.Model(og_config)
                self._decoder = GenaiDecoder(
                    self._engine, context_length=context, vocab_size=vocab, eos=eos
                )
        except BuildError as exc:
            raise self._refuse(str(exc)) from exc
        except Exception as exc:  # onnxruntime's and genai's errors share no base but Exception
            raise self._refuse(f"{profile.kv_engine} could not load the model: {exc}") from exc
        self._load_chat_template()

    def _load_chat_template(self) -> None:
        try:
            self.chat_template = ChatTemplate.from_directory(self.directory)
        except ChatError as exc:
            raise self._refuse(str(exc)) from exc

    def _refuse(self, reason: str) -> WarmUpError:
        return WarmUpError(self.model_id, self.version, reason)

    # ------------------------------------------------------------------ adapters

    @property
    def version(self) -> str:
        """What serves: the adapter's version over this base, else the base's."""
        active = self._active
        return active[0].name if active else self.base_version

    @property
    def adapter(self) -> adapters.Adapter | None:
        active = self._active
        return active[0] if active else None

    def _serving(self) -> tuple[Decoder | None, str]:
        """The decoder and version a request starts on, read together (one reference)."""
        active = self._active
        if active is not None:
            return active[1], active[0].name
        return self._decoder, self.base_version

    def _declared_format(self) -> tuple[str, Mapping[str, Any] | None]:
        """The output format answers are checked against: the adapter's, else the base's."""
        active = self._active
        if active is not None and active[0].output_format is not None:
            return active[0].output_format, active[0].output_schema
        return self.manifest.output_format, self.manifest.output_schema

    def apply_adapter(self, adapter: adapters.Adapter | None) -> None:
        """Serve ``adapter`` over this base from the next request on (``None``: the base).

        Refused with :class:`AdapterRefused` (the current adapter keeps serving) when it is
        for another base, does not fit the graph's LoRA inputs, or its trial generation fails.
        """
        decoder = self._decoder
        if adapter is None:
            self._active = None
            return
        name = adapter.name
        if not isinstance(decoder, KvCacheDecoder) or self._session is None:
            raise AdapterRefused(
                self.model_id,
                name,
                "adapters need a KV-cache build decoded by onnxruntime (kv_engine onnxruntime)",
            )
        try:
            adapters.check_fits(adapter, self.base_digest, adapters.lora_inputs(self._session))
        except adapters.AdapterError as exc:
            raise AdapterRefused(self.model_id, name, str(exc)) from exc
        prompt = list(self._tokenizer.encode(SELF_TEST_TEXTS[0]).ids) or [0]
        params = SamplingParams(max_tokens=SELF_TEST_NEW_TOKENS)
        try:
            produced = list(decoder.steps_with(prompt, params, adapter.values))
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise AdapterRefused(self.model_id, name, f"trial generation failed: {exc}") from exc
        if not produced:
            raise AdapterRefused(self.model_id, name, "trial generation produced no token")
        self._active = (adapter, decoder.with_adapter(adapter.values))

    # ------------------------------------------------------------------ leases

    def acquire(self) -> bool:
        """Take a lease for one request; False once the model is closed."""
        with self._lock:
            if self._closed:
                return False
            self._leases += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._leases -= 1
            if self._leases == 0:
                self._lock.notify_all()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._leases

    def close(self, timeout_s: float | None = None) -> bool:
        """Refuse new leases, wait for in-flight requests, then drop the session.

        Returns False when requests were still running at the timeout; the session is then
        left to the garbage collector, which frees it after the last request lets go.
        """
        with self._lock:
            self._closed = True
            drained = self._lock.wait_for(lambda: self._leases == 0, timeout=timeout_s)
            # A generation still running holds its own reference to the engine and finishes.
            self._session = None
            self._engine = None
            self._decoder = None
        return drained

    # ------------------------------------------------------------------ inference

    def warm_up(self) -> None:
        """Run the self-test; raise :class:`WarmUpError` with the first problem found."""
        if self._decoder is not None:
            self._warm_up_generate()
            return
        # A padded batch, then the longest input alone: all three in one batch pad every text
        # to max_length, which cost MiniLM int8 twice as much, and a swap's self-test shares
        # the CPU with serving.
        for texts in (SELF_TEST_TEXTS[:2], SELF_TEST_TEXTS[2:]):
            try:
                result = self.run(texts)
            except InferenceError as exc:
                raise self._refuse(f"self-test failed: {exc.reason}") from exc
            except WarmUpError:
                raise
            n = len(texts)
            if result.features.shape[0] != n:
                raise self._refuse(
                    f"self-test returned {result.features.shape[0]} rows for {n} inputs"
                )
            if not np.all(np.isfinite(result.features)):
                raise self._refuse("self-test output is not finite (NaN or inf)")

    def _warm_up_generate(self) -> None:
        """A short greedy generation per self-test text: the decoder checks shapes, finite
        logits and that every produced token is in the vocabulary; here, that a real prompt
        produces at least one token and the outputs line up with the inputs."""
        try:
            result = self.run(SELF_TEST_TEXTS, max_new_tokens=SELF_TEST_NEW_TOKENS)
        except InferenceError as exc:
            raise self._refuse(f"self-test failed: {exc.reason}") from exc
        if len(result.predictions) != len(SELF_TEST_TEXTS):
            raise self._refuse(
                f"self-test returned {len(result.predictions)} outputs "
                f"for {len(SELF_TEST_TEXTS)} prompts"
            )
        if result.predictions[0].finish_reason == "empty":
            raise self._refuse("the tokenizer encodes the self-test prompt to no tokens")
        if result.token_counts[2] > self.manifest.max_length:
            raise self._refuse("self-test: an overlong prompt was not truncated")

    def run(self, texts: Sequence[str], *, max_new_tokens: int | None = None) -> InferenceResult:
        """Serve a batch; ``max_new_tokens`` is for GENERATE (default
        :data:`~edge_runtime.generation.DEFAULT_MAX_NEW_TOKENS`, at most
        :data:`~edge_runtime.generation.MAX_NEW_TOKENS_CAP`) and ignored by other tasks."""
        if self._decoder is not None:
            return self._generate(self._clip(texts), max_new_tokens)
        session = self._session
        if session is None:
            raise InferenceError(self.model_id, self.version, "the session was released")
        texts = self._clip(texts)
        # One encode per text, padded here: encode_batch's hand-off to the tokenizer's thread
        # pool cost 110 us for two short texts against 24 us, and 554 against 458 for 32.
        encodings = [self._tokenizer.encode(t) for t in texts]
        if len(encodings) > 1:
            longest = max(map(len, encodings))
            pad_id, pad_token = self._pad
            for e in encodings:
                if len(e) < longest:
                    e.pad(longest, pad_id=pad_id, pad_token=pad_token)
        masks = [e.attention_mask for e in encodings]
        feed: dict[str, Any] = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64)}
        if self._feed_mask:
            feed["attention_mask"] = np.array(masks, dtype=np.int64)
        try:
            raw = session.run(self._output_names, feed)
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise InferenceError(self.model_id, self.version, str(exc)) from exc
        # Plain Python on a few small lists: after a model run has filled the CPU's caches
        # with weights, every numpy call here costs several times its warm price.
        tokens = tuple(map(sum, masks))
        primary = np.asarray(raw[0], dtype=np.float32)
        if primary.ndim != 2 or primary.shape[0] != len(texts):
            raise self._refuse(f"first output has shape {primary.shape}, expected (batch, n)")
        if self.manifest.task == "CLASSIFY":
            return self._classify(primary, raw, tokens)
        return self._embed(primary, tokens)

    def _clip(self, texts: Sequence[str]) -> list[str]:
        limit = self.manifest.max_length * CHARS_PER_TOKEN_BOUND
        if self._decoder is not None:
            return [t if len(t) <= limit else t[-limit:] for t in texts]
        return [t if len(t) <= limit else t[:limit] for t in texts]

    def _classify(
        self, primary: FloatArray, raw: list[Any], tokens: tuple[int, ...]
    ) -> InferenceResult:
        labels = self.manifest.labels
        if primary.shape[1] != len(labels):
            raise self._refuse(
                f"first output has {primary.shape[1]} classes, the manifest lists {len(labels)}"
            )
        probs = _softmax(primary) if self._apply_softmax else primary
        predictions = []
        best = []
        for row in probs.tolist():
            # A sum of float32 values is finite exactly when each value is.
            if not math.isfinite(sum(row)):
                raise InferenceError(self.model_id, self.version, "non-finite class scores")
            confidence = max(row)
            index = row.index(confidence)  # the first of equal scores, as argmax takes
            best.append(index)
            predictions.append(Prediction(label=labels[index], confidence=confidence))
        features = np.asarray(raw[1], dtype=np.float32) if len(raw) > 1 else probs
        return InferenceResult(
            self.model_id,
            self.version,
            tuple(predictions),
            tokens,
            tuple(best),
            features,
            n_classes=len(labels),
        )

    def _generate(self, texts: Sequence[str], max_new_tokens: int | None) -> InferenceResult:
        decoder, version = self._serving()
        if decoder is None:
            raise InferenceError(self.model_id, version, "the session was released")
        budget = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
        if not 1 <= budget <= MAX_NEW_TOKENS_CAP:
            raise InferenceError(
                self.model_id,
                version,
                f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_CAP}, got {budget}",
            )
        generations: list[Generation] = []
        # A prompt keeps its end, which is what the continuation depends on.
        keep = max(1, min(self.manifest.max_length, decoder.context_length - budget))
        for encoding in self._tokenizer.encode_batch(list(texts)):
            try:
                generations.append(greedy(decoder, encoding.ids[-keep:], budget))
            except Exception as exc:  # onnxruntime's errors share no base class but Exception
                raise InferenceError(self.model_id, version, str(exc)) from exc
        predictions = tuple(
            Prediction(
                confidence=g.confidence,
                text=self._tokenizer.decode(list(g.token_ids), skip_special_tokens=True),
                token_ids=g.token_ids,
                finish_reason=g.finish_reason,
            )
            for g in generations
        )
        return InferenceResult(
            self.model_id,
            version,
            predictions,
            tuple(g.prompt_tokens for g in generations),
            (),
            # No feature vector: the drift sketch of a generator is its token and confidence
            # histograms.
            np.zeros((0, 0), dtype=np.float32),
            output_token_counts=tuple(len(g.token_ids) for g in generations),
        )

    # ------------------------------------------------------------------ streaming

    def prompt_ids(
        self, *, prompt: str | None = None, messages: Sequence[Mapping[str, Any]] | None = None
    ) -> list[int]:
        """Token ids of a plain prompt, or of chat messages through the model's template.

        Raises :class:`ParameterError` for messages the template cannot format, or for chat on
        a model that ships no template.
        """
        if messages is not None:
            if self.chat_template is None:
                raise ParameterError(
                    f"{self.model_id}:{self.version} ships no chat template: "
                    "use a plain prompt (/v1/completions)"
                )
            try:
                prompt = self.chat_template.render(messages)
            except ChatError as exc:
                raise ParameterError(str(exc)) from exc
            # The template writes the special tokens itself; the tokenizer must not add more.
            return list(self._tokenizer.encode(prompt, add_special_tokens=False).ids)
        return list(self._tokenizer.encode(prompt or "").ids)

    def check_request(self, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        """Raise :class:`ParameterError` for a request this model cannot answer in full."""
        decoder = self._decoder
        if self.manifest.task != "GENERATE":
            raise ParameterError(
                f"{self.model_id}:{self.version} is a {self.manifest.task} model; "
                "only GENERATE models answer completions"
            )
        if decoder is None:
            raise InferenceError(self.model_id, self.version, "the session was released")
        if not prompt_ids:
            raise ParameterError("the prompt encodes to no tokens")
        check_budget(decoder, len(prompt_ids), params.max_tokens)

    def stream(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        *,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Iterator[Delta | Done]:
        """Text increments of one generation, then its statistics (see
        :func:`edge_runtime.generation.stream`); the caller holds a lease throughout.

        Raises :class:`ParameterError` before any work for a request the model cannot
        answer, :class:`InferenceError` when the engine fails mid-way.
        """
        decoder, version = self._serving()
        if decoder is None:
            raise InferenceError(self.model_id, version, "not a GENERATE model, or released")
        if not prompt_ids:
            raise ParameterError("the prompt encodes to no tokens")
        tokenizer = self._tokenizer

        def decode(ids: list[int]) -> str:
            return str(tokenizer.decode(ids, skip_special_tokens=True))

        output_format, schema = self._declared_format()
        events = stream(decoder, decode, prompt_ids, params, cancelled=cancelled)
        text: list[str] = []
        try:
            for event in events:
                if isinstance(event, Delta):
                    text.append(event.text)
                elif event.stats.finish_reason in ("stop", "length"):
                    # A cancelled answer was cut short by its client, not by the model.
                    verdict = check_answer("".join(text), output_format, schema)
                    event = Done(
                        dataclasses.replace(
                            event.stats,
                            empty=verdict.empty,
                            format_checked=verdict.checked,
                            format_violation=verdict.violation is not None,
                            refusal=verdict.refusal,
                        )
                    )
                yield event
        except (ValueError, RuntimeError) as exc:
            if isinstance(exc, ParameterError):
                raise
            raise InferenceError(self.model_id, version, str(exc)) from exc

    def _embed(self, primary: FloatArray, tokens: tuple[int, ...]) -> InferenceResult:
        primary.flags.writeable = False
        predictions = tuple(Prediction(embedding=row) for row in primary)
        return InferenceResult(self.model_id, self.version, predictions, tokens, (), primary)


# Tokenizers of encoder models, configured (truncation, padding), by the verified sha256 of
# their file and max_length. Parsing tokenizer.json holds the GIL (about 20 ms for MiniLM's),
# which stalls every serving thread during a swap; a new version of the same base model ships
# the same file, so the swap reuses the one already loaded. Encoding is read-only and
# thread-safe, so the old and the new version share it while the old drains.
_TOKENIZERS: OrderedDict[tuple[str, int], Tokenizer] = OrderedDict()
_TOKENIZERS_KEPT = 4
_TOKENIZERS_LOCK = threading.Lock()


def _shared_tokenizer(key: tuple[str, int] | None) -> Tokenizer | None:
    if key is None:
        return None
    with _TOKENIZERS_LOCK:
        found = _TOKENIZERS.get(key)
        if found is not None:
            _TOKENIZERS.move_to_end(key)
        return found


def _keep_tokenizer(key: tuple[str, int] | None, tokenizer: Tokenizer) -> None:
    if key is None:
        return
    with _TOKENIZERS_LOCK:
        _TOKENIZERS[key] = tokenizer
        while len(_TOKENIZERS) > _TOKENIZERS_KEPT:
            _TOKENIZERS.popitem(last=False)


def _genai_session_overlay(profile: HardwareProfile) -> dict[str, Any]:
    """The device profile's threading for genai's session, as a genai_config overlay."""
    return {
        "model": {
            "decoder": {
                "session_options": {
                    "intra_op_num_threads": profile.intra_op_threads,
                    "inter_op_num_threads": profile.inter_op_threads,
                    "session.intra_op.allow_spinning": "1" if profile.allow_spinning else "0",
                    "log_severity_level": 3,
                }
            }
        }
    }


def _softmax(x: FloatArray) -> FloatArray:
    e: FloatArray = np.exp(x - x.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e
