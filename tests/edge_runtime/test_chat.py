"""Chat templates from the artifact: rendering, their sandbox, and message validation."""

from __future__ import annotations

import json

import pytest

from edge_runtime.chat import ChatError, ChatTemplate, validate_messages

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_the_template_file_is_rendered_with_the_generation_prompt(tmp_path):
    (tmp_path / "chat_template.jinja").write_text(CHATML)
    template = ChatTemplate.from_directory(tmp_path)
    assert template is not None
    got = template.render([{"role": "user", "content": "Hi"}])
    assert got == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_a_template_in_tokenizer_config_and_its_special_tokens(tmp_path):
    config = {
        "chat_template": "{{ bos_token }}{{ messages[0]['content'] }}{{ eos_token }}",
        "bos_token": {"content": "<s>"},
        "eos_token": "</s>",
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    template = ChatTemplate.from_directory(tmp_path)
    assert template is not None
    assert template.render([{"role": "user", "content": "x"}]) == "<s>x</s>"


def test_no_template_is_none(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert ChatTemplate.from_directory(tmp_path) is None


def test_the_sandbox_refuses_a_template_that_reaches_beyond_the_messages():
    template = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ChatError, match="template"):
        template.render([{"role": "user", "content": "x"}])


def test_raise_exception_in_a_template_is_a_chat_error():
    template = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(ChatError, match="roles must alternate"):
        template.render([{"role": "user", "content": "x"}])


def test_a_template_that_does_not_compile_is_refused():
    with pytest.raises(ChatError, match="does not compile"):
        ChatTemplate("{% for %}")


@pytest.mark.parametrize(
    ("messages", "words"),
    [
        ([], "non-empty"),
        ("hello", "non-empty"),
        ([{"role": "wizard", "content": "x"}], "role"),
        ([{"role": "user", "content": 3}], "content"),
        (["just text"], "object"),
        ([{"role": "user", "content": "x"}] * 257, "at most"),
    ],
)
def test_malformed_messages_are_refused(messages, words):
    with pytest.raises(ChatError, match=words):
        validate_messages(messages)
