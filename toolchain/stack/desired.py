"""The desired state: every model of a stack resolved into a `DesiredModel`.

A built model comes from a Modelfile (`modelfile:`), a base (`from:`: a local GGUF file or a
model name; it replaces the Modelfile's FROM line), or both. Its state is what the server will
hold after `/api/create`: a model built `FROM` another model of the stack inherits that model's
template, system, parameters (its own win per key), messages (replaced when it has its own),
licenses and adapters (appended), and base weights. A model built from a model the stack does not
build (a pulled one, or one already on the server) has an unknown base: only what it sets itself
is compared. A model imported from a GGUF without a TEMPLATE line may get a template and default
parameters detected by the server, so its unset fields are not compared either (`complete=False`).

Local files (GGUF weights, adapters) are hashed here; with `hash_files=False` (offline review of
git history) their identity is their path.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from toolchain import digests
from toolchain.modelfile import Command, Modelfile, ModelfileError, parse, to_create_request
from toolchain.names import parse_name
from toolchain.stack.load import LoadedStack, StackError
from toolchain.stack.schema import Model
from toolchain.stack.state import DesiredModel, ModelState, Upload, display_name, key_of
from toolchain.stacktest.scratch import SCRATCH_HOST, is_scratch

_PATHLIKE = re.compile(r"^(\.{1,2}[/\\]|[/\\~]|[A-Za-z]:[/\\])|\.gguf$", re.IGNORECASE)


def looks_like_path(value: str) -> bool:
    """`from:` values that name a file: ./x, ../x, /x, ~/x, C:\\x, or anything ending in .gguf."""
    return bool(_PATHLIKE.search(value))


def build(loaded: LoadedStack, *, hash_files: bool = True) -> dict[str, DesiredModel]:
    """Every model of the stack, keyed by its case-folded name."""
    return _Builder(loaded, hash_files).build()


class _Builder:
    def __init__(self, loaded: LoadedStack, hash_files: bool) -> None:
        self.loaded = loaded
        self.source = loaded.source
        self.hash_files = hash_files
        self.specs: dict[str, tuple[str, Model]] = {}
        self.done: dict[str, DesiredModel] = {}
        self.visiting: list[str] = []
        self.review_files: set[str] = set()

    def build(self) -> dict[str, DesiredModel]:
        for name, model in self.loaded.stack.models.items():
            n = parse_name(name)
            if not n.is_valid() or n.digest:
                raise self.loaded.error(f"invalid model name {name!r}", "models", name)
            if is_scratch(name):
                raise self.loaded.error(f"{name!r}: the host {SCRATCH_HOST} is reserved for stack test's scratch models", "models", name)
            key = key_of(name)
            if key in self.specs:
                other = self.specs[key][0]
                raise self.loaded.error(
                    f"duplicate model name: {name!r} and {other!r} are the same model (names are case-insensitive)",
                    "models",
                    name,
                )
            self.specs[key] = (name, model)
        for key in self.specs:
            self._resolve(key)
        return {key: self.done[key] for key in self.specs}

    # -- one model ------------------------------------------------------------------------------

    def _resolve(self, key: str) -> DesiredModel:
        if key in self.done:
            return self.done[key]
        name, model = self.specs[key]
        if key in self.visiting:
            chain = " -> ".join(self.specs[k][0] for k in self.visiting[self.visiting.index(key):] + [key])
            raise self.loaded.error(f"models are built from each other in a cycle: {chain}", "models", name)
        self.visiting.append(key)
        try:
            result = self._pull(name, model, key) if model.pull is not None else self._built(name, model, key)
        finally:
            self.visiting.pop()
        self.done[key] = result
        return result

    def _origin(self, *loc: Any) -> str:
        err = self.loaded.error("", *loc)
        return f"{err.file}:{err.line}"

    def _pull(self, name: str, model: Model, key: str) -> DesiredModel:
        ref = model.pull or ""
        n = parse_name(ref)
        if not n.is_valid():
            raise self.loaded.error(f"invalid model reference {ref!r}", "models", name, "pull")
        if not n.matches(parse_name(name)):
            raise self.loaded.error(
                f"{ref!r} names another model; the reference must name {name!r} itself "
                f"(to make a variant, build it with `from: {ref.split('@')[0]}`)",
                "models",
                name,
                "pull",
            )
        pin = n.digest or None
        plain = ref[: ref.rindex("@")] if pin else ref
        state = ModelState(name=display_name(name), digest=pin, complete=False)
        return DesiredModel(
            key=key, state=state, kind="pull", pull=plain, pin=pin, insecure=model.insecure,
            keep_alive=model.keep_alive, preload=model.preload, origin=self._origin("models", name),
        )

    def _built(self, name: str, model: Model, key: str) -> DesiredModel:
        loaded = self.loaded
        commands: list[Command] = []
        lines: list[int] = []
        base_dir = self._local_dir(loaded.folder)
        where = self._origin("models", name)
        mf_display: Optional[str] = None
        if model.modelfile is not None:
            path = loaded.resolve(model.modelfile, "models", name, "modelfile")
            mf_display = self.source.display(path)
            if not self.source.is_file(path):
                raise loaded.error(f"{model.modelfile}: no such file", "models", name, "modelfile")
            mf = self._parse(self.source.read_text(path), name, mf_display, model.from_ is not None)
            commands, lines = list(mf.commands), list(mf.lines) or [0] * len(mf.commands)
            base_dir = self._local_dir(posixpath.dirname(path))
            where = f"{where} ({mf_display})"
        if model.from_ is not None:
            keep = [(c, ln) for c, ln in zip(commands, lines) if c.name != "model"]
            commands = [Command("model", self._stack_from(name, model.from_))] + [c for c, _ in keep]
            lines = [0] + [ln for _, ln in keep]
        if not any(c.name == "model" for c in commands):
            raise StackError(f"no FROM line (model {name}; or give the model a from: key)", mf_display, None)
        exists = os.path.exists if self.hash_files else self._review_exists
        try:
            req = to_create_request(Modelfile(tuple(commands), tuple(lines)), base_dir, exists)
        except ModelfileError as exc:
            if mf_display and exc.line:
                raise StackError(f"{exc.detail} (model {name})", mf_display, exc.line) from None
            raise loaded.error(exc.detail, "models", name, "from" if model.from_ is not None else "modelfile") from None
        if req.draft_files:
            raise loaded.error("DRAFT models are not supported by stacks yet", "models", name)

        uploads: list[Upload] = []
        files = self._files(req.model_files, uploads, name)
        adapters = self._files(req.adapter_files, uploads, name)
        own = ModelState(
            name=display_name(name),
            template=req.template,
            system=req.system,
            parameters={k: tuple(v) if isinstance(v, list) else v for k, v in req.parameters.items()},
            messages=tuple((m["role"], m["content"]) for m in req.messages) or None,
            license="\n".join(req.license) if req.license else None,
            adapters=tuple(adapters.values()),
        )
        after: tuple[str, ...] = ()
        if req.from_ is not None:
            parent_key = key_of(req.from_)
            parent: Optional[ModelState] = None
            if parent_key in self.specs and parent_key != key:
                after = (parent_key,)
                dep = self._resolve(parent_key)
                parent = dep.state if dep.kind == "create" else None
            state = _inherit(own, parent, req.from_)
        else:
            first = req.model_files[0]
            state = replace(own, base=next(iter(files.values())), base_ref=first.written, complete=req.template is not None)
        body = req.body(files=files or None, adapters=adapters or None)
        own_fields = {f for f in ("template", "system", "license", "adapters") if getattr(own, f)}
        own_fields |= {"message"} if own.messages else set()
        own_fields |= {f"parameter:{p}" for p in own.parameters}
        return DesiredModel(
            key=key, state=state, kind="create", create=body, uploads=tuple(uploads),
            keep_alive=model.keep_alive, preload=model.preload, after=after, origin=where,
            own=frozenset(own_fields) if after else None,
        )

    @staticmethod
    def _parse(text: str, name: str, display: str, has_from: bool) -> Modelfile:
        """Parse a Modelfile; one without FROM is fine when the stack gives the model a `from:`."""
        try:
            return parse(text)
        except ModelfileError as exc:
            if not (exc.kind == "missing_from" and has_from):
                hint = "; or give the model a `from:` key in the stack" if exc.kind == "missing_from" else ""
                raise StackError(f"{exc.detail} (model {name}){hint}", display, exc.line) from None
        mf = parse("FROM _\n" + text)  # a stand-in FROM line, replaced by the stack's from: below
        return Modelfile(mf.commands, tuple(max(n - 1, 0) for n in mf.lines))

    # -- files ------------------------------------------------------------------------------------

    def _stack_from(self, name: str, value: str) -> str:
        """A `from:` value as a Modelfile FROM argument (file paths made absolute)."""
        if not self.hash_files and "${" in value:  # offline review: an unset variable, known by its text
            return value
        if not looks_like_path(value):
            if not parse_name(value).is_valid():
                raise self.loaded.error(f"{value!r} is neither a file path (./x.gguf) nor a valid model name", "models", name, "from")
            return value
        path = Path(os.path.expanduser(value))
        if not path.is_absolute():
            path = Path(self._local_dir(self.loaded.folder)) / path
        if self.hash_files and not path.is_file():
            raise self.loaded.error(f"{value}: no such file", "models", name, "from")
        self.review_files.add(os.path.normpath(str(path)))
        return os.path.normpath(str(path))

    def _review_exists(self, path: str) -> bool:
        """Offline review: weights need not be on this machine; a `.gguf`/`${VAR}` FROM is a file."""
        return os.path.exists(path) or path in self.review_files or "${" in path or path.lower().endswith(".gguf")

    def _local_dir(self, folder: str) -> str:
        local = self.source.local_path(folder)
        return str(local) if local is not None else folder

    def _files(self, paths: list, uploads: list[Upload], name: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for lp in paths:
            if self.hash_files:
                if os.path.isdir(lp.path):
                    raise self.loaded.error(f"{lp.written}: a directory; stacks take a GGUF file", "models", name)
                digest, size = file_digest(lp.path)
                uploads.append(Upload(digest, lp.path, size))
            else:
                digest = "file:" + lp.written
            out[os.path.basename(lp.path)] = digest
        return out


def _inherit(own: ModelState, parent: Optional[ModelState], parent_name: str) -> ModelState:
    """The state of a model created `FROM parent` with its own settings `own`."""
    if parent is None:  # not built by the stack: what it holds is unknown
        return replace(own, base_ref=parent_name, complete=False)
    licenses = "\n".join(x for x in (parent.license, own.license) if x) or None
    return replace(
        own,
        base=parent.base,
        base_ref=parent_name,
        template=own.template if own.template is not None else parent.template,
        system=own.system if own.system is not None else parent.system,
        parameters={**parent.parameters, **own.parameters},
        messages=own.messages if own.messages else parent.messages,
        license=licenses,
        adapters=parent.adapters + own.adapters,
        complete=parent.complete,
    )


def file_digest(path: str) -> tuple[str, int]:
    """(`sha256:<hex>`, size) of a local file; cached while the file is unchanged."""
    st = os.stat(path)
    return _digest(os.path.realpath(path), st.st_size, st.st_mtime_ns), st.st_size


@lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return digests.file_digest(path)
