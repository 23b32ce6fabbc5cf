"""`stack fsck`: check a model store on disk (server stopped or running) and tidy its leftovers.

Errors (the store's invariants, checked by `Store.verify`): every manifest parses, every blob
it references exists, every blob hashes to its name. Any error makes fsck fail.

Leftovers (invisible to every reader by design, reported, removed by `--repair`): the store's
temp files (`.tmp-*` in blobs/ and beside manifests), interrupted downloads
(`blobs/sha256-<hex>-partial`, `-partial-<n>` part states) and registry upload sessions
(`blobs/.uploads/*`). A leftover younger than the grace period may belong to a write in
progress on a running server, so `--repair` keeps it. `--repair` never removes a blob, and
touches nothing but these leftovers.

Also reported, never changed: symlinks (the server never follows one it did not make; an
operator may have planted them on purpose), files that are neither blobs nor leftovers, and
how many complete blobs no manifest references (the server's prune removes those).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from server.store import TMP_PREFIX, Store, is_partial_download

DEFAULT_GRACE_SECONDS = 60.0

_BLOB = re.compile(r"sha256-[0-9a-f]{64}")


@dataclass
class Report:
    root: Path
    errors: list[str] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # leftovers too young to remove
    notes: list[str] = field(default_factory=list)
    manifests: int = 0
    blobs: int = 0
    unreferenced: int = 0

    @property
    def clean(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        rel = lambda p: str(p.relative_to(self.root))  # noqa: E731
        return {
            "root": str(self.root),
            "clean": self.clean,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "unreferenced_blobs": self.unreferenced,
            "errors": self.errors,
            "leftovers": [rel(p) for p in self.leftovers],
            "removed": [rel(p) for p in self.removed],
            "kept": [rel(p) for p in self.kept],
            "notes": self.notes,
        }


def fsck(root: str | Path, *, repair: bool = False, grace_seconds: float = DEFAULT_GRACE_SECONDS,
         hash_blobs: bool = True) -> Report:
    root = Path(root).expanduser().absolute()
    if not (root / "blobs").is_dir() or not (root / "manifests").is_dir():
        raise FileNotFoundError(f"no model store at {root} (it has no blobs/ and manifests/ directories)")
    store = Store(root, noprune=True)
    report = Report(root)
    report.errors = store.verify(hash_blobs=hash_blobs)
    report.manifests = sum(
        1 for p in store.manifests_dir.glob("*/*/*/*") if p.is_file() and not p.name.startswith(TMP_PREFIX)
    )
    refs = store.referenced()
    for entry in sorted(store.blobs_dir.iterdir()):
        name = entry.name
        if entry.is_symlink():
            report.notes.append(f"symlink blobs/{name} -> {os.readlink(entry)}")
        elif _BLOB.fullmatch(name) and entry.is_file():
            report.blobs += 1
            if refs is not None and "sha256:" + name[7:] not in refs:
                report.unreferenced += 1
        elif name.startswith(TMP_PREFIX) or is_partial_download(name):
            report.leftovers.append(entry)
        elif name == ".uploads" and entry.is_dir():
            report.leftovers.extend(sorted(p for p in entry.iterdir() if not p.is_symlink()))
        else:
            report.notes.append(f"unexpected file blobs/{name}")
    for path in sorted(store.manifests_dir.rglob("*")):
        rel = path.relative_to(store.manifests_dir)
        if path.is_symlink():
            report.notes.append(f"symlink manifests/{rel} -> {os.readlink(path)}")
        elif path.name.startswith(TMP_PREFIX) and path.is_file():
            report.leftovers.append(path)
        elif path.is_file() and len(rel.parts) != 4:
            report.notes.append(f"unexpected file manifests/{rel}")
    if refs is None:
        report.notes.append("unreferenced blobs not counted: a manifest does not parse")
    if repair:
        now = time.time()
        for path in report.leftovers:
            try:
                if now - path.lstat().st_mtime < grace_seconds:
                    report.kept.append(path)
                    continue
                if path.is_dir() and not path.is_symlink():
                    continue  # an upload session directory, if ever used: left for the server
                path.unlink()
                report.removed.append(path)
            except FileNotFoundError:
                continue  # finished (renamed) or removed meanwhile
    return report


def render(report: Report) -> str:
    lines = [f"error: {e}" for e in report.errors]
    for path in report.leftovers:
        rel = path.relative_to(report.root)
        state = "removed" if path in report.removed else "kept (younger than the grace period)" if path in report.kept else "leftover"
        lines.append(f"{state}: {rel}")
    lines += [f"note: {n}" for n in report.notes]
    verdict = "clean" if report.clean else f"{len(report.errors)} errors"
    lines.append(
        f"{report.root}: {report.manifests} manifests, {report.blobs} blobs "
        f"({report.unreferenced} unreferenced), {len(report.leftovers)} leftovers: {verdict}"
    )
    return "\n".join(lines) + "\n"
