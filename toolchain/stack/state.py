"""Values the plan compares: what a model is (`ModelState`) and what the stack wants (`DesiredModel`).

Pure data, no I/O. `desired.py` builds them from a stack and its Modelfiles, `actual.py` from a
server's `/api/tags` + `/api/show`, `gitdiff.py` from a git commit; `plan.py` diffs them.

A field that is `None` is *not managed*: the stack does not say what it must be (for example the
template of a model imported from a GGUF without a TEMPLATE line, which the server may detect on
its own). `complete` says whether everything else is known, so that a key present on the server
but absent from the stack is a real difference (a PARAMETER line that was removed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional

from toolchain.names import parse_name

ParamValue = Any  # int | float | bool | str | tuple[str, ...]


@dataclass(frozen=True)
class ModelState:
    """The semantic content of one model."""

    name: str  # display name, e.g. "support-bot:latest"
    base: Optional[str] = None  # identity of the weights: "sha256:<hex>" (or "file:<path>" in git review)
    base_ref: Optional[str] = None  # what the weights came from, for people: a model name or a file path
    template: Optional[str] = None
    system: Optional[str] = None
    parameters: Mapping[str, ParamValue] = field(default_factory=dict)
    messages: Optional[tuple[tuple[str, str], ...]] = None
    license: Optional[str] = None  # all LICENSE texts joined with "\n" (as /api/show reports them)
    adapters: tuple[str, ...] = ()  # adapter digests (or file identities)
    digest: Optional[str] = None  # manifest digest ("sha256:<hex>"), when known
    complete: bool = True  # False: unset fields may hold server-chosen values; compare only what is set


@dataclass(frozen=True)
class Upload:
    """A local file to upload as a blob before a create."""

    digest: str  # "sha256:<hex>"
    path: str  # absolute path on this machine
    size: int


@dataclass(frozen=True)
class DesiredModel:
    """One model of the stack, resolved: its state and how to make it."""

    key: str  # case-folded name used to match the server's models
    state: ModelState
    kind: Literal["create", "pull"]
    create: Optional[Mapping[str, Any]] = None  # the /api/create body (without "model"/"stream")
    uploads: tuple[Upload, ...] = ()
    pull: Optional[str] = None  # reference to pull, without a digest
    pin: Optional[str] = None  # pinned manifest digest "sha256:<hex>"
    insecure: bool = False
    keep_alive: Optional[str | int] = None
    preload: bool = False
    after: tuple[str, ...] = ()  # keys of stack models that must exist first (the FROM chain)
    own: Optional[frozenset[str]] = None  # fields its own Modelfile sets ("system", "parameter:top_k", ...)
    origin: str = ""  # "stacks/x/stack.yaml:12" for messages


def key_of(name: str) -> str:
    """The case-insensitive identity of a model name (defaults filled in: `bot` == `BOT:latest`)."""
    return "/".join(parse_name(name).casefold_key()[:3]) + ":" + parse_name(name).casefold_key()[3]


def display_name(name: str) -> str:
    """The short form servers list (`support-bot:latest`)."""
    return parse_name(name).display_shortest()
