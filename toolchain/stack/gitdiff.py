"""`stack diff BASE HEAD`: what a change to a stack and its Modelfiles does, from git alone.

Both versions are loaded from git commits (or HEAD's side from the working tree) through the
same loader and desired-state builder as `stack plan`, then compared with the same pure diff,
every field exactly. No server is contacted and no weights are hashed: a local GGUF is known by
its path. Unset `${VAR}`s stay literal, so a review needs no secrets.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Optional

import git

from toolchain.errors import CorralError
from toolchain.stack.desired import build
from toolchain.stack.load import StackError, WorkTree, decode, load_text
from toolchain.stack.plan import Plan, diff
from toolchain.stack.state import DesiredModel

REASONS = {"create": "added to the stack", "delete": "removed from the stack", "pull": "pull reference changed"}


class GitTree:
    """The files of one commit; paths are repository-relative."""

    def __init__(self, repo: git.Repo, rev: str) -> None:
        try:
            self.commit = repo.commit(rev)
        except (git.BadName, ValueError) as exc:
            raise CorralError(f"unknown git revision {rev!r}") from exc
        self.rev = rev
        self.root = Path(repo.working_tree_dir or ".")

    def _blob(self, path: str):  # noqa: ANN202
        try:
            item = self.commit.tree / path
        except KeyError:
            return None
        return item if item.type == "blob" else None

    def read_text(self, path: str) -> str:
        blob = self._blob(path)
        if blob is None:
            raise StackError("no such file", self.display(path))
        return decode(blob.data_stream.read(), self.display(path))

    def is_file(self, path: str) -> bool:
        return self._blob(path) is not None

    def display(self, path: str) -> str:
        return f"{self.rev}:{path}"

    def local_path(self, path: str) -> Path:
        return self.root / path


def _desired(source, path: str) -> dict[str, DesiredModel]:  # noqa: ANN001
    if not source.is_file(path):
        return {}
    loaded = load_text(source.read_text(path), source, path, strict_env=False)
    return build(loaded, hash_files=False)


def diff_revisions(stack_file: str | Path, base: str = "HEAD", head: Optional[str] = None) -> Plan:
    """The plan that turns the stack at `base` into the stack at `head` (None: the working tree)."""
    path = Path(stack_file)
    try:
        repo = git.Repo(path.parent if path.parent.exists() else ".", search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise CorralError(f"{stack_file} is not inside a git repository") from None
    root = Path(repo.working_tree_dir or ".").resolve()
    rel = Path(os.path.abspath(path)).relative_to(root).as_posix()
    before = _desired(GitTree(repo, base), rel)
    after = _desired(GitTree(repo, head) if head else WorkTree(root), rel)
    if not before and not after and not (GitTree(repo, base).is_file(rel) or (root / rel).is_file()):
        raise CorralError(f"{rel} exists in neither {base} nor {head or 'the working tree'}")
    changes, _ = diff(after, {k: d.state for k, d in before.items()}, prune=True, exact=True)
    changes = tuple(replace(c, reason=REASONS.get(c.action, c.reason)) for c in changes)
    return Plan(f"{base}..{head or 'working tree'}", "", changes)
