"""`/api/create`: turn a create request into layers, a config blob and a manifest.

Two phases, so that a bad request is answered with a 4xx and leaves nothing behind:

* `plan(store, request)` validates everything and reads what it needs (the base model's manifest
  and layers, GGUF headers of uploaded files, template syntax, parameter names and types) without
  writing anything. Every problem raises a `ServerError` subclass naming it.
* `execute(store, plan)` yields Ollama's progress messages while it writes the new small layers,
  the config blob and, last, the manifest; it holds the model's lock and pins every digest the new
  manifest references so a concurrent delete cannot prune them in between.

Layer order and blob encodings follow Ollama's `createModel`, so the same request gives the same
manifest digest here and in Ollama.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterator

from server import gojson
from server.errors import BadRequest, InvalidModel, InvalidName, MissingBlob, ModelNotFound, NotFound
from server.gguf_info import GGUFInfo, is_gguf
from server.manifest import (
    MEDIA_ADAPTER,
    MEDIA_CONFIG,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
    Manifest,
    digest_of,
    normalize_digest,
)
from server.store import Store
from toolchain.format import human_number
from toolchain.names import Name, parse_name

_GGUF_MEDIA = (MEDIA_MODEL, MEDIA_PROJECTOR, MEDIA_ADAPTER)
_MESSAGE_KEYS = ("role", "content", "thinking", "images", "tool_calls", "tool_name", "tool_call_id")


@dataclass
class CreateRequest:
    """The fields of Ollama's `api.CreateRequest` that creation uses (legacy `modelfile` already
    converted by `from_modelfile`)."""

    model: str
    from_: str = ""
    files: dict[str, str] = field(default_factory=dict)
    adapters: dict[str, str] = field(default_factory=dict)
    template: str = ""
    system: str = ""
    license: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    quantize: str = ""


@dataclass
class _NewBlob:
    media_type: str
    data: bytes


@dataclass
class Plan:
    name: Name
    statuses: list[str]  # emitted before the layer statuses ("parsing GGUF", ...)
    layers: list[Layer | _NewBlob]
    config: dict[str, Any]


def plan(store: Store, req: CreateRequest, *, pre_statuses: list[str] | None = None) -> Plan:
    """Validate `req` against the store and decide every layer; writes nothing."""
    name = parse_name(req.model)
    if not req.model or not name.is_valid() or name.digest:
        raise InvalidName()
    name = store.resolve(name)
    if req.quantize:
        raise BadRequest("quantization is not supported by this server")
    statuses = list(pre_statuses or [])
    config: dict[str, Any] = {"renderer": req.renderer, "parser": req.parser, "requires": req.requires}

    if req.from_:
        layers, base_config = _from_model(store, req.from_)
        for key in ("renderer", "parser", "requires", "model_format", "capabilities"):
            if not config.get(key) and base_config.get(key):
                config[key] = base_config[key]
    elif req.files:
        statuses += ["parsing GGUF"] * len(req.files)
        layers = _from_files(store, req.files, adapter=False)
    else:
        raise BadRequest("neither 'from' or 'files' was specified")
    if req.adapters:
        layers += _from_files(store, req.adapters, adapter=True)

    headers: list[tuple[Layer, GGUFInfo]] = []
    for layer in layers:
        if isinstance(layer, Layer) and layer.media_type in _GGUF_MEDIA:
            headers.append((layer, _gguf(store, layer.digest, layer.from_ or layer.digest)))
    families: list[str] = []
    for layer, info in headers:
        if layer.media_type == MEDIA_MODEL:
            config.setdefault("model_format", "gguf")
            config.setdefault("model_family", info.architecture)
            config.setdefault("model_type", human_number(info.parameter_count))
            config.setdefault("file_type", info.file_type)
            families.append(info.architecture)

    out: list[Layer | _NewBlob] = list(layers)
    if req.template:
        _check_template(req.template)
        out = _replace(out, MEDIA_TEMPLATE, req.template.encode("utf-8"))
    if req.system:
        out = _replace(out, MEDIA_SYSTEM, req.system.encode("utf-8"))
    for text in req.license:
        out.append(_NewBlob(MEDIA_LICENSE, text.encode("utf-8")))
    params = _check_parameters(req.parameters)
    for layer in out:
        if isinstance(layer, Layer) and layer.media_type == MEDIA_PARAMS:
            inherited = _inherited_json(store, layer.digest)
            if isinstance(inherited, dict):
                params = {**inherited, **params}
    if params:
        out = _replace(out, MEDIA_PARAMS, gojson.encode(params, sort_keys=True))
    if req.messages:
        out = _replace(out, MEDIA_MESSAGES, gojson.encode([_message(m) for m in req.messages]))

    ordered = {
        "model_format": config.get("model_format", ""),
        "model_family": config.get("model_family", ""),
        "model_families": families or None,
        "model_type": config.get("model_type", ""),
        "file_type": config.get("file_type", ""),
    }
    for key in ("renderer", "parser", "requires"):
        if config.get(key):
            ordered[key] = config[key]
    if config.get("capabilities"):
        ordered["capabilities"] = config["capabilities"]
    ordered["architecture"] = "amd64"
    ordered["os"] = "linux"
    return Plan(name=name, statuses=statuses, layers=out, config=ordered)


def execute(store: Store, p: Plan) -> Iterator[dict[str, Any]]:
    """Write the planned blobs and manifest, yielding Ollama's progress messages."""
    for status in p.statuses:
        yield {"status": status}
    config_data = gojson.encode(p.config)
    digests = [item.digest if isinstance(item, Layer) else digest_of(item.data) for item in p.layers]
    with store.lock(p.name), store.pin([*digests, digest_of(config_data)]):
        layers: list[Layer] = []
        for item in p.layers:
            if isinstance(item, Layer):
                store.blob_size(item.digest)  # raises BlobNotFound if it vanished since planning
                layers.append(item)
                yield {"status": f"using existing layer {item.digest}"}
                continue
            result = store.put_bytes(item.data)
            layers.append(Layer(item.media_type, result.digest, result.size))
            yield {"status": f"{'creating new' if result.created else 'using existing'} layer {result.digest}"}
        config = store.put_bytes(config_data)
        yield {"status": "writing manifest"}
        store.write_manifest(p.name, Manifest(Layer(MEDIA_CONFIG, config.digest, config.size), layers))
    yield {"status": "success"}


def from_modelfile(model: str, text: str, **fields: Any) -> tuple[CreateRequest, list[str]]:
    """The legacy request shape (`modelfile` text, Ollama ≤ 0.5.4): parse it with the Modelfile
    parser and convert it as Ollama's client does. `FROM`/`ADAPTER` may name a model or a blob
    (`@sha256:<hex>`), never a server-side path. Returns the request and leading statuses."""
    from toolchain import modelfile as mf

    try:
        req = mf.to_create_request(mf.parse(text), exists=lambda _path: False)
    except (mf.ModelfileError, ValueError) as exc:
        raise BadRequest(_with_line(exc)) from None
    if req.model_files or req.adapter_files or req.draft_files:
        raise BadRequest("invalid model reference: the server cannot read local files; upload them as blobs")
    files = {"": d for d in req.model_blobs[-1:]}
    adapters = {"": d for d in req.adapter_blobs[-1:]}
    out = CreateRequest(
        model=model,
        from_="" if files else (req.from_ or ""),
        files=files,
        adapters=adapters,
        template=req.template or "",
        system=req.system or "",
        license=list(req.license),
        parameters=dict(req.parameters),
        messages=list(req.messages),
        renderer=req.renderer or "",
        parser=req.parser or "",
        requires=req.requires or "",
        **fields,
    )
    return out, ["parsing modelfile"]


# -- helpers ------------------------------------------------------------------------------------


def _from_model(store: Store, ref: str) -> tuple[list[Layer | _NewBlob], dict[str, Any]]:
    name = parse_name(ref)
    if not name.is_valid():
        raise InvalidName()
    try:
        manifest = store.read_manifest(name)
    except ModelNotFound:
        raise NotFound(f'model "{ref}" not found, try pulling it first') from None
    short = store.resolve(name).display_shortest()
    for d in manifest.blobs():
        if not store.has_blob(d.digest):
            raise MissingBlob(d.digest, f"model '{short}' is incomplete: blob")
    layers: list[Layer | _NewBlob] = [
        Layer(layer.media_type, layer.digest, layer.size, from_=short, name=layer.name) for layer in manifest.layers
    ]
    base = _inherited_json(store, manifest.config.digest) if manifest.config.digest else None
    return layers, base if isinstance(base, dict) else {}


def _from_files(store: Store, files: dict[str, str], *, adapter: bool) -> list[Layer | _NewBlob]:
    if adapter and len(files) > 1:
        raise BadRequest("only one adapter is currently supported")
    layers: list[Layer | _NewBlob] = []
    for path in sorted(files):
        if path and not _valid_path(path):
            raise BadRequest("file path must be relative")
        digest = normalize_digest(files[path])
        if not store.has_blob(digest):
            raise MissingBlob(digest)
        if path.endswith(".safetensors"):
            raise BadRequest("safetensors import is not supported: convert the model to GGUF first")
        with store.open_blob(digest) as f:
            head = f.read(4)
        if not is_gguf(head):
            raise BadRequest("supplied file was not in GGUF format")
        info = _gguf(store, digest, path or digest)
        if adapter:
            media = MEDIA_ADAPTER
        elif info.kind == "adapter":
            media = MEDIA_ADAPTER
        elif info.kind in ("projector", "mmproj") or (
            info.architecture == "clip" and info.get("block_count") is None
        ):
            media = MEDIA_PROJECTOR
        else:
            media = MEDIA_MODEL
        layers.append(Layer(media, digest, store.blob_size(digest), from_=path))
    return layers


def _gguf(store: Store, digest: str, label: str) -> GGUFInfo:
    try:
        return store.gguf(digest)
    except InvalidModel as exc:
        raise InvalidModel(f"invalid GGUF file {label}: {exc}") from None


def _valid_path(path: str) -> bool:
    """Go's `fs.ValidPath`: unrooted, slash-separated, no empty, `.` or `..` elements."""
    if path == ".":
        return True
    return not path.startswith("/") and "\\" not in path and all(
        part not in ("", ".", "..") for part in path.split("/")
    ) and posixpath.normpath(path) == path


def _replace(layers: list[Layer | _NewBlob], media: str, data: bytes) -> list[Layer | _NewBlob]:
    kept = [layer for layer in layers if layer.media_type != media]
    return [*kept, _NewBlob(media, data)]


def _inherited_json(store: Store, digest: str) -> Any:
    try:
        return json.loads(store.read_blob(digest, limit=16 << 20))
    except ValueError:
        return None


def _check_template(template: str) -> None:
    try:
        from toolchain import template as tmpl
    except ImportError:  # the template engine is not part of this build yet
        return
    try:
        tmpl.parse(template)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the client's template
        raise BadRequest(f"template error: {exc}") from None


def _check_parameters(params: dict[str, Any]) -> dict[str, Any]:
    from toolchain.options import DEPRECATED_PARAMETERS, OPTIONS, OptionError, validate_options

    if not isinstance(params, dict):
        raise BadRequest("parameters must be an object")
    for key in params:
        if key not in OPTIONS and key not in DEPRECATED_PARAMETERS:
            raise BadRequest(f"unknown parameter '{key}'")
    try:
        validate_options({k: v for k, v in params.items() if k in OPTIONS})
    except OptionError as exc:
        raise BadRequest(str(exc)) from None
    for key, value in params.items():
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            raise BadRequest(f'option "{key}" must be a finite number')
    return {k: v for k, v in params.items() if v is not None}


def _message(m: dict[str, Any]) -> dict[str, Any]:
    """Ollama's `api.Message` JSON: role (lower-cased) and content always, the rest if set."""
    if not isinstance(m, dict) or not isinstance(m.get("role", ""), str):
        raise BadRequest("messages must be objects with a role and content")
    out: dict[str, Any] = {"role": str(m.get("role", "")).lower(), "content": m.get("content") or ""}
    for key in _MESSAGE_KEYS[2:]:
        if m.get(key):
            out[key] = m[key]
    return out


def _with_line(exc: Exception) -> str:
    message = str(exc)
    line = getattr(exc, "line", None)
    if line and "(line " not in message:
        return f"(line {line}): {message}"
    return message
