"""Ollama's rules for turning a request into the prompt text a model sees.

Pure functions over values; the only outside input is `count_tokens` (for truncating a chat to
the context window). The template side follows Ollama's `template.Template`:

* a template that mentions neither `.Messages` nor `.Response` gets `{{ .Response }}` appended;
* `prompt` + `suffix` (fill-in-the-middle) renders with `.Prompt`/`.Suffix`;
* a template that uses `.Messages` renders once with `.System` (all system messages joined by a
  blank line), `.Messages` (consecutive same-role messages merged, tool messages kept apart),
  `.Tools` and the think flags;
* any other ("legacy") template renders once per user/assistant turn with `.System`,
  `.Prompt`, `.Response`, and the last turn is cut right after `{{ .Response }}` so that the
  model continues from there.

Chat truncation (Ollama's `chatPrompt`): drop the oldest messages until the prompt fits
`num_ctx`, always keeping the system messages and the latest message.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

from toolchain.errors import CorralError
from toolchain.template import Template, nodes, parse
from toolchain.template.values import message_value, tools_value

DEFAULT_TEMPLATE = "{{ .Prompt }}"
IMAGE_TOKENS = 768  # what Ollama counts per image when the model has a projector

ThinkValue = Union[bool, str, None]
CountTokens = Callable[[str], int]


class PromptError(CorralError):
    """A request that cannot be turned into a prompt (a client error)."""


@dataclass
class Values:
    """Ollama's `template.Values`."""

    messages: Sequence[Any] = ()
    tools: Sequence[Any] = ()
    prompt: str = ""
    suffix: str = ""
    think: ThinkValue = None
    force_legacy: bool = False


# -- templates ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def load_template(src: Optional[str]) -> Template:
    """Parse a model TEMPLATE the way Ollama does (empty means `{{ .Prompt }}`): templates that
    use neither `.Messages` nor `.Response` get a trailing `{{ .Response }}`.
    Raises `TemplateError`. The result is shared: treat it as read-only."""
    tmpl = parse(src or DEFAULT_TEMPLATE)
    used = tmpl.vars()
    if "messages" not in used and "response" not in used:
        response = nodes.FieldNode(["Response"], len(tmpl.source))
        pipe = nodes.PipeNode(decl=[], cmds=[nodes.CommandNode([response], response.pos)], pos=response.pos)
        tmpl.root.nodes.append(nodes.ActionNode(pipe, response.pos))
    return tmpl


def _template(template: Union[str, Template, None]) -> Template:
    if isinstance(template, Template):
        return template
    return load_template(template or DEFAULT_TEMPLATE)


def think_values(think: ThinkValue) -> dict[str, Any]:
    """`.Think`, `.ThinkLevel`, `.IsThinkSet` from a request's `think` (bool or level)."""
    if think is None:
        return {"Think": False, "ThinkLevel": "", "IsThinkSet": False}
    if isinstance(think, bool):
        return {"Think": think, "ThinkLevel": "medium" if think else "", "IsThinkSet": True}
    level = str(think)
    return {"Think": level in ("high", "medium", "low", "max"), "ThinkLevel": level, "IsThinkSet": True}


def collate(messages: Sequence[Any]) -> tuple[str, list[dict]]:
    """(all system contents joined by a blank line, messages with consecutive same-role
    messages merged into one, except tool messages). Input messages are not modified."""
    system: list[str] = []
    out: list[dict] = []
    for raw in messages:
        msg = _as_message_dict(raw)
        if msg["role"] == "system":
            system.append(msg["content"])
        if out and out[-1]["role"] == msg["role"] and msg["role"] != "tool":
            out[-1] = {**out[-1], "content": out[-1]["content"] + "\n\n" + msg["content"]}
        else:
            out.append(msg)
    return "\n\n".join(system), out


def _as_message_dict(raw: Any) -> dict:
    dump = getattr(raw, "model_dump", None)
    msg = dict(dump(exclude_none=True)) if dump is not None else dict(raw)
    msg["role"] = str(msg.get("role") or "")
    msg["content"] = str(msg.get("content") or "")
    return msg


def cut_after_response(root: nodes.ListNode) -> nodes.ListNode:
    """A copy of `root` without anything after the first `.Response` field (Ollama's
    `deleteNode`): conditions of if/range/with are not searched, as in Ollama."""
    cut = False

    def hit(node: Any) -> bool:
        nonlocal cut
        if isinstance(node, nodes.FieldNode) and "Response" in node.ident:
            cut = True
            return False
        return cut

    def walk(node: Any) -> Any:
        if hit(node):
            return None
        if isinstance(node, nodes.ListNode):
            node.nodes = [c for c in map(walk, node.nodes) if c is not None]
        elif isinstance(node, nodes.BranchNode):
            node.list = walk(node.list) or nodes.ListNode()
            if node.else_list is not None:
                node.else_list = walk(node.else_list)
        elif isinstance(node, nodes.ActionNode):
            pipe = walk(node.pipe)
            if pipe is None:
                return None
            node.pipe = pipe
        elif isinstance(node, nodes.PipeNode):
            cmds = []
            for cmd in node.cmds:
                args = [a for a in map(walk, cmd.args) if a is not None]
                if not args:
                    return None
                cmd.args = args
                cmds.append(cmd)
            if not cmds:
                return None
            node.cmds = cmds
        return node

    return walk(copy.deepcopy(root)) or nodes.ListNode()


def execute(template: Union[str, Template, None], values: Values) -> str:
    """Ollama's `Template.Execute`: render `values` with `template` (source or parsed)."""
    tmpl = _template(template)
    think = think_values(values.think)
    if values.prompt and values.suffix:
        return tmpl.execute({"Prompt": values.prompt, "Suffix": values.suffix, "Response": "", **think})

    system, messages = collate(values.messages)
    if not values.force_legacy and "messages" in tmpl.vars():
        return tmpl.execute(
            {
                "System": system,
                "Messages": [message_value(m) for m in messages],
                "Tools": tools_value(values.tools),
                "Response": "",
                **think,
            }
        )

    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def flush() -> None:
        out.append(tmpl.execute({**turn, **think}))
        turn.update(System="", Prompt="", Response="")

    for msg in messages:
        role, content = msg["role"], msg["content"]
        if role == "system":
            if turn["Prompt"] or turn["Response"]:
                flush()
            turn["System"] = content
        elif role == "user":
            if turn["Response"]:
                flush()
            turn["Prompt"] = content
        elif role == "assistant":
            turn["Response"] = content
    out.append(tmpl.execute({**turn, **think}, root=cut_after_response(tmpl.root)))
    return "".join(out)


# -- images ---------------------------------------------------------------------------------------


class ChatPrompt(NamedTuple):
    """The prompt text and, in `[img-N]` order, the images it refers to."""

    prompt: str
    images: list


def tag_images(messages: Sequence[Any], first_id: int = 0) -> tuple[list[dict], list]:
    """Messages with `[img-N]` tags for their images (replacing `[img]` markers in order, or
    prefixed), and the images in id order (Ollama's `imageTaggedMessages`)."""
    tagged: list[dict] = []
    images: list = []
    for raw in messages:
        msg = _as_message_dict(raw)
        prefix = ""
        content = msg["content"]
        for image in msg.get("images") or []:
            tag = f"[img-{first_id + len(images)}]"
            images.append(image)
            if "[img]" in content:
                content = content.replace("[img]", tag, 1)
            else:
                prefix += tag
        msg["content"] = prefix + content
        tagged.append(msg)
    return tagged, images


# -- chat and generate ----------------------------------------------------------------------------


def build_chat_prompt(
    template: Union[str, Template, None],
    messages: Sequence[Any],
    tools: Sequence[Any] = (),
    *,
    num_ctx: int,
    count_tokens: CountTokens,
    think: ThinkValue = None,
    truncate: bool = True,
    has_projector: bool = False,
) -> ChatPrompt:
    """Ollama's `chatPrompt`: drop the oldest messages until the rendered prompt fits in
    `num_ctx` tokens (images count 768 each when the model has a projector), keeping every
    system message and always the latest message; images become `[img-N]` tags."""
    msgs = [_as_message_dict(m) for m in messages]
    last = len(msgs) - 1

    def kept_system(i: int) -> list[dict]:
        return [m for m in msgs[:i] if m["role"] == "system"]

    def fits(i: int) -> bool:
        text = execute(template, Values(messages=kept_system(i) + msgs[i:], tools=tools, think=think))
        size = count_tokens(text)
        if has_projector:
            size += IMAGE_TOKENS * sum(len(m.get("images") or []) for m in msgs[i:])
        return size <= num_ctx

    start = 0
    if truncate and last > 0 and not fits(0):
        # Ollama tries i = 0, 1, 2... and keeps the first start that fits (at worst only the
        # latest message). The prompt only shrinks as messages are dropped, so a binary search
        # finds the same start with log(n) renders instead of n.
        lo, hi = 1, last
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(mid):
                hi = mid
            else:
                lo = mid + 1
        start = lo
    system = kept_system(start) if truncate else []
    tagged, images = tag_images(msgs[start:])
    text = execute(template, Values(messages=system + tagged, tools=tools, think=think))
    return ChatPrompt(text, images)


def chat_prompt(
    template: Union[str, Template, None],
    messages: Sequence[Any],
    tools: Sequence[Any] = (),
    *,
    num_ctx: int,
    count_tokens: CountTokens,
    think: ThinkValue = None,
    truncate: bool = True,
    has_projector: bool = False,
) -> str:
    """The prompt text of `build_chat_prompt`."""
    return build_chat_prompt(
        template, messages, tools, num_ctx=num_ctx, count_tokens=count_tokens, think=think,
        truncate=truncate, has_projector=has_projector,
    ).prompt


def chat_messages(messages: Sequence[Any], *, model_system: str = "", model_messages: Sequence[Any] = ()) -> list[dict]:
    """The messages `/api/chat` renders: the model's MESSAGEs, then the request's; the model's
    SYSTEM goes first unless the request starts with a system message."""
    request = [_as_message_dict(m) for m in messages]
    out = [_as_message_dict(m) for m in model_messages] + request
    if model_system and not (request and request[0]["role"] == "system"):
        out.insert(0, {"role": "system", "content": model_system})
    return out


def generate_prompt(
    template: Union[str, Template, None],
    *,
    prompt: str,
    system: str = "",
    suffix: str = "",
    raw: bool = False,
    request_template: str = "",
    model_system: str = "",
    model_messages: Sequence[Any] = (),
    context_text: Optional[str] = None,
    images: Sequence[Any] = (),
    think: ThinkValue = None,
    num_ctx: int = 0,
    count_tokens: Optional[CountTokens] = None,
    truncate: bool = True,
) -> ChatPrompt:
    """Ollama's `/api/generate` prompt. `template` is the model's TEMPLATE; `request_template`
    (the request's `template`) replaces it and is rendered directly, without truncation.
    `context_text` is the detokenized `context` of a previous answer, put in front.
    Raises `PromptError` for raw mode with template/system/context, `TemplateError` for a bad
    request template."""
    if raw:
        if request_template or system or context_text is not None:
            raise PromptError("raw mode does not support template, system, or context")
        return ChatPrompt(prompt, list(images))
    tmpl = load_template(request_template) if request_template else _template(template)
    prefix = context_text or ""
    if suffix:
        return ChatPrompt(prefix + execute(tmpl, Values(prompt=prompt, suffix=suffix, think=think)), list(images))
    msgs: list[dict] = []
    if system or model_system:
        msgs.append({"role": "system", "content": system or model_system})
    if context_text is None:
        msgs.extend(_as_message_dict(m) for m in model_messages)
    msgs.append({"role": "user", "content": prompt, "images": list(images)})
    if request_template:  # Ollama renders a request template directly: no truncation, no image tags
        return ChatPrompt(prefix + execute(tmpl, Values(messages=msgs, think=think)), list(images))
    if count_tokens is None:
        truncate = False
        count_tokens = len
    result = build_chat_prompt(tmpl, msgs, (), num_ctx=num_ctx, count_tokens=count_tokens, think=think, truncate=truncate)
    return ChatPrompt(prefix + result.prompt, result.images)
