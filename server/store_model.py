"""A model as the rest of the server sees it: a manifest resolved into paths, texts and settings.

`load_model(store, name)` reads the manifest and its small layers (template, system, params,
messages, license, config) the way Ollama's `GetModel` does; the weights stay on disk (`model_path`).
`show(model, ...)` builds the body of `/api/show`; `render_modelfile` the Modelfile it contains.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server import gojson
from server.errors import InvalidModel, ModelNotFound, ServerError
from server.gguf_info import GGUFInfo
from server.manifest import (
    MEDIA_ADAPTER,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_PROMPT,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Manifest,
)
from server.store import Store
from toolchain import modelfile as mf
from toolchain.names import Name

DEFAULT_TEMPLATE = "{{ .Prompt }}"
_TEXT_LIMIT = 16 << 20


@dataclass
class Model:
    """One model of the store, with its small layers read."""

    name: Name  # casing as on disk
    manifest: Manifest
    config: dict[str, Any] = field(default_factory=dict)
    model_digest: str = ""
    model_path: Path | None = None
    parent_model: str = ""
    adapter_paths: list[Path] = field(default_factory=list)
    projector_paths: list[Path] = field(default_factory=list)
    projector_digests: list[str] = field(default_factory=list)
    template: str | None = None  # the Go TEMPLATE layer, None when the model has none
    system: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    license: list[str] = field(default_factory=list)

    @property
    def short_name(self) -> str:
        return self.name.display_shortest()

    @property
    def digest(self) -> str:
        """Hex sha256 of the manifest file (the ID `ollama list` shows)."""
        return self.manifest.digest

    def details(self) -> dict[str, Any]:
        """Ollama's `ModelDetails` from the config blob."""
        c = self.config
        return {
            "parent_model": self.parent_model,
            "format": _str(c.get("model_format")),
            "family": _str(c.get("model_family")),
            "families": c.get("model_families") if isinstance(c.get("model_families"), list) else None,
            "parameter_size": _str(c.get("model_type")),
            "quantization_level": _str(c.get("file_type")),
        }

    def gguf(self, store: Store, *, verbose: bool = False) -> GGUFInfo | None:
        """The model layer's GGUF header, or None when the model has no (readable) GGUF layer."""
        if not self.model_digest or _str(self.config.get("model_format")) not in ("", "gguf"):
            return None
        try:
            return store.gguf(self.model_digest, verbose=verbose)
        except InvalidModel:
            return None

    def capabilities(self, store: Store) -> list[str]:
        """Ollama's capability derivation (config, GGUF keys, projector, templates)."""
        caps: list[str] = []

        def add(c: str) -> None:
            if c not in caps:
                caps.append(c)

        info = self.gguf(store)
        if info is not None:
            embeds = info.get("pooling_type") is not None or info.get("attention.causal") is False
            add("embedding" if embeds else "completion")
        for c in self.config.get("capabilities") or []:
            if isinstance(c, str):
                add(c)
        if info is not None:
            if info.get("vision.block_count") is not None:
                add("vision")
            if info.get("audio.block_count") is not None:
                add("audio")
            chat = info.kv.get("tokenizer.chat_template")
            if isinstance(chat, str) and chat:
                if "tools" in chat or "tool_call" in chat:
                    add("tools")
                if "<think>" in chat and "</think>" in chat:
                    add("thinking")
        if self.projector_paths:
            add("vision")
        if self.template:
            names = _template_vars(self.template)
            if "tools" in names:
                add("tools")
            if "suffix" in names:
                add("insert")
            if "<think>" in self.template and "</think>" in self.template:
                add("thinking")
            else:
                from toolchain.thinking import infer_tags

                if all(infer_tags(self.template)):  # Ollama's rule: tags around .Thinking in .Messages
                    add("thinking")
        return caps


def _template_vars(source: str) -> set[str]:
    """The lower-cased field names a Go template mentions (Ollama's `Template.Vars`); for a
    template the engine cannot parse, the `.Name` fields found by a plain text scan."""
    try:
        from toolchain import template as tmpl

        return set(tmpl.parse(source).vars())
    except Exception:  # noqa: BLE001 - a stored template that does not parse still has fields
        return {m.lower() for m in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)", source)}


def load_model(store: Store, name: Name) -> Model:
    """Read `name`'s manifest and small layers. ModelNotFound if it (or a blob it needs) is missing."""
    resolved = store.resolve(name)
    manifest = store.read_manifest(resolved)
    model = Model(name=resolved, manifest=manifest)
    short = resolved.display_shortest()

    def text(digest: str) -> str:
        return _read(store, digest, short).decode("utf-8", errors="replace")

    if manifest.config.digest:
        model.config = _json(_read(store, manifest.config.digest, short), dict, short, "config") or {}
    for layer in manifest.layers:
        media = layer.media_type
        if media in (MEDIA_MODEL, MEDIA_ADAPTER, MEDIA_PROJECTOR):
            path = store.blob_path(layer.digest)
            if not path.is_file():
                raise _missing(short, layer.digest)
            if media == MEDIA_MODEL:
                model.model_digest, model.model_path, model.parent_model = layer.digest, path, layer.from_
            elif media == MEDIA_ADAPTER:
                model.adapter_paths.append(path)
            else:
                model.projector_paths.append(path)
                model.projector_digests.append(layer.digest)
        elif media in (MEDIA_TEMPLATE, MEDIA_PROMPT):
            model.template = text(layer.digest)
        elif media == MEDIA_SYSTEM:
            model.system = text(layer.digest)
        elif media == MEDIA_PARAMS:
            model.params = _json(_read(store, layer.digest, short), dict, short, "parameters") or {}
        elif media == MEDIA_MESSAGES:
            messages = _json(_read(store, layer.digest, short), list, short, "messages") or []
            model.messages = [m for m in messages if isinstance(m, dict)]
        elif media == MEDIA_LICENSE:
            model.license.append(text(layer.digest))
    return model


def render_modelfile(model: Model, store: Store) -> str:
    """The Modelfile `/api/show` returns (Ollama's header, then `Model.String`)."""
    commands: list[tuple[str, str]] = []
    if model.model_path is not None:
        commands.append(("model", str(model.model_path)))
    commands += [("adapter", str(p)) for p in model.adapter_paths]
    commands += [("model", str(p)) for p in model.projector_paths]
    commands.append(("template", model.template if model.template is not None else DEFAULT_TEMPLATE))
    if model.system:
        commands.append(("system", model.system))
    for key in ("renderer", "parser"):
        if _str(model.config.get(key)):
            commands.append((key, model.config[key]))
    for key, value in model.params.items():
        for item in value if isinstance(value, list) else [value]:
            commands.append((key, item if isinstance(item, str) else gojson.format_g(item)))
    commands += [("license", text) for text in model.license]
    commands += [("message", f"{m.get('role', '')}: {m.get('content', '')}") for m in model.messages]
    header = (
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        f"# FROM {model.short_name}\n\n"
    )
    return header + mf.format(mf.Modelfile(commands=tuple(commands)))


def parameters_text(params: dict[str, Any]) -> str:
    """`/api/show` `parameters`: `%-30s %#v` per value, one line per list element."""
    lines = []
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            shown = _go_quote(item) if isinstance(item, str) else gojson.format_g(item)
            lines.append(f"{key:<30} {shown}")
    return "\n".join(lines)


def show(
    model: Model, store: Store, *, verbose: bool = False, system: str = "", options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The `/api/show` response body (keys in Ollama's order, empty ones left out).

    `system` replaces the model's system prompt and `options` are merged into the rendered
    Modelfile's parameters (not into `parameters`), as Ollama's ShowHandler does.
    """
    parameters = parameters_text(model.params)
    if system or options:
        model = dataclasses.replace(model, system=system or model.system, params={**model.params, **(options or {})})
    info = model.gguf(store, verbose=verbose)
    details = model.details()
    if info is not None and details["quantization_level"] in ("", "unknown") and info.file_type != "unknown":
        details["quantization_level"] = info.file_type
    template = model.template
    if template is None:
        chat = info.kv.get("tokenizer.chat_template") if info is not None else None
        template = chat if isinstance(chat, str) and chat else DEFAULT_TEMPLATE
    body: dict[str, Any] = {
        "license": "\n".join(model.license),
        "modelfile": render_modelfile(model, store),
        "parameters": parameters,
        "template": template,
        "system": model.system,
        "renderer": _str(model.config.get("renderer")),
        "parser": _str(model.config.get("parser")),
        "details": details,
        "messages": [{"role": m.get("role", ""), "content": m.get("content", "")} for m in model.messages],
        "model_info": info.model_info() if info is not None else {},
    }
    if model.projector_digests:
        try:
            body["projector_info"] = store.gguf(model.projector_digests[0], verbose=verbose).model_info()
        except InvalidModel:
            pass
    if info is not None:
        body["tensors"] = [{"name": t.name, "type": t.type_name, "shape": list(t.shape)} for t in info.tensors]
    body["capabilities"] = model.capabilities(store)
    body["modified_at"] = model.manifest.mtime
    body["requires"] = _str(model.config.get("requires"))
    return {k: v for k, v in body.items() if k in ("model_info", "details") or v not in ("", [], None)}


def _go_quote(s: str) -> str:
    """Go's `%#v` of a string (strconv.Quote) for printable text."""
    return json.dumps(s, ensure_ascii=False)


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _missing(short: str, digest: str) -> ModelNotFound:
    return ModelNotFound(f"model '{short}' not found: its manifest names missing blob {digest}")


def _read(store: Store, digest: str, short: str) -> bytes:
    path = store.blob_path(digest)
    try:
        with open(path, "rb") as f:
            data = f.read(_TEXT_LIMIT + 1)
    except FileNotFoundError:
        raise _missing(short, digest) from None
    if len(data) > _TEXT_LIMIT:
        raise ServerError(f"layer {digest} of {short} is too large to read")
    return data


def _json(data: bytes, kind: type, short: str, what: str) -> Any:
    try:
        value = json.loads(data)
    except ValueError:
        raise ServerError(f"{what} of {short} is not valid JSON") from None
    if value is not None and not isinstance(value, kind):
        raise ServerError(f"{what} of {short} is not a JSON {kind.__name__}")
    return value
