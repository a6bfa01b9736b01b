"""OpenAI-style generation endpoints: ``POST /v1/chat/completions`` and ``/v1/completions``.

The shapes are OpenAI's, so existing clients and SDKs work against a device: ``messages``
(formatted by the model's own chat template) or ``prompt``; ``stream: true`` answers with
server-sent events (``data: {chunk}`` lines, then ``data: [DONE]``), else one JSON body.
Decoding fields: ``max_tokens`` (or ``max_completion_tokens``; up to what the model's context
leaves after the prompt), ``temperature`` (default 0: greedy), ``top_p``, ``top_k``,
``repetition_penalty``, ``seed``, ``stop`` (a string or up to 4). ``n`` must be 1; ``model`` is
accepted and the answer names the model and version that actually served.

Errors use OpenAI's ``{"error": {"message", "type", "param", "code"}}`` body: 400 for a request
out of range, 429 (with ``Retry-After``) when every generation slot and queue place is taken,
503 while no model serves, 500 when the engine fails. A client that disconnects stops its
generation at the next token. Prompts and answers are served and forgotten.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from edge_runtime.decoding import DEFAULT_MAX_TOKENS, ParameterError, SamplingParams
from edge_runtime.errors import InferenceError, NoModelError
from edge_runtime.generation import Delta, Done
from edge_runtime.generation_service import GenerationBusy
from edge_runtime.generation_stats import GenerationStats
from edge_runtime.http_app import RUNTIME, admitted
from edge_runtime.runtime import EdgeRuntime

log = logging.getLogger(__name__)

_INTS = ("max_tokens", "max_completion_tokens", "top_k", "seed", "n")
_FLOATS = ("temperature", "top_p", "repetition_penalty")


def error(
    status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    response = web.json_response(body, status=status)
    if status == 429:
        response.headers["Retry-After"] = "1"
    return response


def sampling(body: dict[str, Any]) -> SamplingParams:
    """The request's decoding fields; :class:`ParameterError` names the first bad one."""
    for name in _INTS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ParameterError(f"{name} must be an integer")
    for name in _FLOATS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ParameterError(f"{name} must be a number")
    if body.get("n", 1) != 1:
        raise ParameterError("n must be 1: a device answers one choice per request")
    stop = body.get("stop")
    if isinstance(stop, str):
        stops: tuple[str, ...] = (stop,)
    elif stop is None:
        stops = ()
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise ParameterError("stop must be a string or a list of strings")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))

    def number(name: str, default: float) -> float:
        value = body.get(name)
        return default if value is None else float(value)

    return SamplingParams(
        max_tokens=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        temperature=number("temperature", 0.0),
        top_p=number("top_p", 1.0),
        top_k=int(body.get("top_k") or 0),
        repetition_penalty=number("repetition_penalty", 1.0),
        seed=body.get("seed"),
        stop=stops,
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, chat=False)


async def _complete(request: web.Request, *, chat: bool) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    with admitted(request) as refusal:
        if refusal is not None:
            status, message = refusal
            return error(
                status,
                message,
                kind="rate_limit_exceeded" if status == 429 else "invalid_request_error",
            )
        return await _serve(request, runtime, chat=chat)


async def _serve(request: web.Request, runtime: EdgeRuntime, *, chat: bool) -> web.StreamResponse:
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge:
        return error(413, "request body too large")
    except ValueError:
        return error(400, "body must be JSON")
    if not isinstance(body, dict):
        return error(400, "body must be a JSON object")
    try:
        params = sampling(body)
    except ParameterError as exc:
        return error(400, str(exc))
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return error(400, "messages must be a list of {role, content}", param="messages")
        source: dict[str, Any] = {"messages": messages}
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return error(400, "prompt must be a string", param="prompt")
        source = {"prompt": prompt}
    stream_wanted = bool(body.get("stream", False))
    options = body.get("stream_options")
    usage_wanted = isinstance(options, dict) and bool(options.get("include_usage"))

    def gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    events = runtime.generation.stream(params, gone=gone, **source)
    try:
        first = await anext(events)
    except StopAsyncIteration:  # pragma: no cover - a stream always ends with Done
        return error(500, "the generation produced nothing", kind="server_error")
    except ParameterError as exc:
        return error(400, str(exc))
    except GenerationBusy as exc:
        runtime.metrics.http_refused.labels(runtime.device.device_id, "429").inc()
        return error(429, str(exc), kind="rate_limit_exceeded")
    except NoModelError as exc:
        return error(503, str(exc), kind="server_error")
    except InferenceError as exc:
        return error(500, str(exc), kind="server_error")
    served = runtime.slot.version or "-"
    head = _Head(chat=chat, model=runtime.model_id, version=served)
    try:
        if stream_wanted:
            return await _sse(request, head, first, events, usage_wanted)
        return await _whole(head, first, events)
    finally:
        await events.aclose()


class _Head:
    """What every chunk of one answer repeats."""

    def __init__(self, *, chat: bool, model: str, version: str) -> None:
        self.chat = chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.version = version

    def envelope(self, choices: list[dict[str, Any]], *, chunk: bool) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        return {
            "id": self.id,
            "object": f"{kind}.chunk" if chunk and self.chat else kind,
            "created": self.created,
            "model": self.model,
            "model_version": self.version,
            "choices": choices,
        }

    def choice(self, text: str, finish: str | None, *, chunk: bool) -> dict[str, Any]:
        if not self.chat:
            return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        if chunk:
            return {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
        return {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
        }


def _usage(stats: GenerationStats) -> dict[str, int]:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.output_tokens,
        "total_tokens": stats.prompt_tokens + stats.output_tokens,
    }


def _finish(stats: GenerationStats) -> str:
    # OpenAI clients know stop and length; a cancelled answer reaches no client.
    return "length" if stats.finish_reason == "length" else "stop"


async def _whole(head: _Head, first: Delta | Done, events: Any) -> web.Response:
    parts: list[str] = []
    event = first
    while not isinstance(event, Done):
        parts.append(event.text)
        try:
            event = await anext(events)
        except InferenceError as exc:
            return error(500, str(exc), kind="server_error")
    body = head.envelope(
        [head.choice("".join(parts), _finish(event.stats), chunk=False)], chunk=False
    )
    body["usage"] = _usage(event.stats)
    return web.json_response(body)


async def _sse(
    request: web.Request, head: _Head, first: Delta | Done, events: Any, usage_wanted: bool
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)

    async def send(payload: dict[str, Any] | str) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        await response.write(f"data: {data}\n\n".encode())

    try:
        if head.chat:
            opening = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": None,
            }
            await send(head.envelope([opening], chunk=True))
        event = first
        while not isinstance(event, Done):
            if event.text:
                await send(head.envelope([head.choice(event.text, None, chunk=True)], chunk=True))
            try:
                event = await anext(events)
            except InferenceError as exc:
                # Headers are gone: the error travels as a last event, as OpenAI's streams do.
                await send(
                    {
                        "error": {
                            "message": str(exc),
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    }
                )
                return response
        await send(head.envelope([head.choice("", _finish(event.stats), chunk=True)], chunk=True))
        if usage_wanted:
            final = head.envelope([], chunk=True)
            final["usage"] = _usage(event.stats)
            await send(final)
        await send("[DONE]")
    except (ConnectionResetError, ConnectionError) as exc:
        log.info("client left a streamed generation: %s", exc)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
