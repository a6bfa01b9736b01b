"""Chat prompts from the model's own template (the tokenizer's Jinja ``chat_template``).

The template ships in the artifact (``chat_template.jinja``, or ``chat_template`` in
``tokenizer_config.json``) and is rendered in Jinja's sandbox: it is signed data, but a
template is still code and gets no access to anything beyond the messages it formats.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROLES = frozenset({"system", "user", "assistant", "tool"})
MAX_MESSAGES = 256
TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG = "tokenizer_config.json"


class ChatError(ValueError):
    """The messages cannot be turned into a prompt; the message says why."""


def _raise(message: str) -> None:
    raise ChatError(f"the chat template refused the messages: {message}")


class ChatTemplate:
    """A compiled template plus the special tokens templates commonly refer to."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise ChatError(f"the model's chat template does not compile: {exc}") from exc
        self._bos = bos_token
        self._eos = eos_token

    @classmethod
    def from_directory(cls, directory: Path) -> ChatTemplate | None:
        """The template an artifact ships, or None when it ships none."""
        config: dict[str, Any] = {}
        if (directory / TOKENIZER_CONFIG).exists():
            try:
                loaded = json.loads((directory / TOKENIZER_CONFIG).read_text())
            except (OSError, ValueError) as exc:
                raise ChatError(f"{TOKENIZER_CONFIG} is not readable JSON: {exc}") from exc
            config = loaded if isinstance(loaded, dict) else {}
        source: str | None = None
        if (directory / TEMPLATE_FILE).exists():
            source = (directory / TEMPLATE_FILE).read_text()
        else:
            stated = config.get("chat_template")
            if isinstance(stated, list):  # named templates: the default one
                named = {t.get("name"): t.get("template") for t in stated if isinstance(t, dict)}
                stated = named.get("default")
            source = stated if isinstance(stated, str) else None
        if source is None:
            return None
        return cls(
            source, bos_token=_token(config, "bos_token"), eos_token=_token(config, "eos_token")
        )

    def render(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt for ``messages``, ending where the assistant's answer begins."""
        clean = validate_messages(messages)
        try:
            return self._template.render(
                messages=clean,
                add_generation_prompt=True,
                bos_token=self._bos,
                eos_token=self._eos,
            )
        except ChatError:
            raise
        except TemplateError as exc:
            raise ChatError(f"the chat template failed: {exc}") from exc


def _token(config: Mapping[str, Any], name: str) -> str:
    value = config.get(name)
    if isinstance(value, dict):  # the {"content": ...} form of older tokenizer configs
        value = value.get("content")
    return value if isinstance(value, str) else ""


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Messages as templates expect them: a non-empty list of ``{role, content}`` strings."""
    if not isinstance(messages, list) or not messages:
        raise ChatError("messages must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise ChatError(f"at most {MAX_MESSAGES} messages")
    clean: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ChatError(f"messages[{i}] must be an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ChatError(f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}")
        if not isinstance(content, str):
            raise ChatError(f"messages[{i}].content must be a string")
        clean.append({"role": str(role), "content": content})
    return clean
