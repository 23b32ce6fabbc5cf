"""GGUF Jinja chat templates (server.chat_template), rendered as transformers renders them."""

from __future__ import annotations

import datetime as dt

import pytest

pytest.importorskip("jinja2")

from server.chat_template import render_jinja_chat_template  # noqa: E402
from toolchain.template import TemplateError  # noqa: E402

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

GEMMA_LIKE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
"""

TOOLS_TEMPLATE = """{%- if tools %}<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools>
{% endif %}
{%- for message in messages %}
{%- if message.tool_calls %}{% for call in message.tool_calls %}<call>{{ call.function | tojson }}</call>{% endfor %}
{%- else %}{{ message.role }}: {{ message.content }}
{% endif %}
{%- if loop.index >= 3 %}{% break %}{% endif %}
{%- endfor %}"""


def test_chatml():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    assert render_jinja_chat_template(CHATML, msgs) == "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert render_jinja_chat_template(CHATML, msgs, add_generation_prompt=False).endswith("hi<|im_end|>\n")


def test_gemma_like_with_bos_system_and_trim():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]
    got = render_jinja_chat_template(GEMMA_LIKE, msgs, bos_token="<bos>")
    assert got == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


def test_raise_exception_is_a_template_error():
    with pytest.raises(TemplateError, match="roles must alternate"):
        render_jinja_chat_template(GEMMA_LIKE, [{"role": "assistant", "content": "x"}])


def test_tools_tojson_keeps_unicode_and_loop_controls_work():
    tools = [{"type": "function", "function": {"name": "météo", "parameters": {}}}]
    msgs = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "météo", "arguments": {"ville": "Zürich"}}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "user", "content": "never rendered: the loop breaks after three"},
    ]
    got = render_jinja_chat_template(TOOLS_TEMPLATE, msgs, tools=tools)
    assert got == (
        '<tools>{"type": "function", "function": {"name": "météo", "parameters": {}}}</tools>\n'
        'user: a\n<call>{"name": "météo", "arguments": {"ville": "Zürich"}}</call>tool: sunny\n'
    )
    assert render_jinja_chat_template(TOOLS_TEMPLATE, msgs[:1], tools=[]) == "user: a\n"


def test_strftime_now_and_extra_variables():
    src = "{{ strftime_now('%Y') }}/{{ enable_thinking }}"
    assert render_jinja_chat_template(src, [], enable_thinking=False) == f"{dt.datetime.now().year}/False"


@pytest.mark.parametrize(
    "source,message",
    [
        ("{% for m in messages %}", "chat template: "),
        ("{{ messages.__class__.__mro__ }}", "chat template: "),
        ("{{ messages[5]['content'] + 1 }}", "chat template: "),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ],
)
def test_bad_templates_are_template_errors(source, message):
    with pytest.raises(TemplateError, match=message):
        render_jinja_chat_template(source, [{"role": "user", "content": "x"}])


def test_sandbox_forbids_mutating_inputs():
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(TemplateError):
        render_jinja_chat_template("{% set _ = messages.append({'role': 'x'}) %}", msgs)
    assert msgs == [{"role": "user", "content": "x"}]
