"""The I/O edge of rendering: put a rendered file set on disk, or diff it against the disk.

`write` builds the whole set in a temporary sibling directory (public files 0644, secret
files 0600, a manifest `.corral-render.json` naming every file Corral wrote, a
`.gitignore` for the secret ones), validates it with `nginx -t` when nginx is on PATH,
and only then swaps it in place of the output directory: in one step where the system can
exchange two directories atomically (Linux `renameat2(RENAME_EXCHANGE)`), else by two renames
(a crash between them leaves the previous set beside the output as `.NAME.old-PID`). It refuses an output directory
holding files Corral did not write (anything absent from the manifest, except nginx's
own runtime directory `nginx/var/`: written empty, so that ``nginx -p DIR/nginx -c
nginx.conf`` runs at once, and carried over from the previous set). `check`
diffs the public files against the disk without writing (`stack render --check`).
"""

from __future__ import annotations

import ctypes
import difflib
import errno
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Optional

from toolchain.render.nginx import MAIN_CONF, RUNTIME_DIR
from toolchain.render.secrets import RenderError

__all__ = ["MANIFEST", "PUBLIC_MODE", "SECRET_MODE", "changes", "check", "foreign_files", "nginx_test", "write"]

MANIFEST = ".corral-render.json"
PUBLIC_MODE = 0o644
SECRET_MODE = 0o600


def _manifest(out_dir: Path) -> Optional[dict]:
    path = out_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("files"), list):
            raise ValueError
        return data
    except ValueError:
        raise RenderError(f"{path} is not a Corral render manifest; refusing to touch {out_dir}") from None


def _all_files(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == RUNTIME_DIR or rel.startswith(RUNTIME_DIR + "/"):
            continue
        if path.is_file() or path.is_symlink():
            out.append(rel)
    return out


def foreign_files(out_dir: Path) -> list[str]:
    """Files in `out_dir` that Corral did not write (nginx's runtime directory excepted)."""
    if not out_dir.exists():
        return []
    if not out_dir.is_dir():
        raise RenderError(f"output {out_dir} exists and is not a directory")
    manifest = _manifest(out_dir)
    ours = set(manifest["files"]) | {MANIFEST} if manifest else set()
    return [f for f in _all_files(out_dir) if f not in ours]


def nginx_test(nginx_dir: Path, nginx: str = "nginx") -> None:
    """`nginx -t` on a rendered prefix; raises RenderError with nginx's own message on failure."""
    (nginx_dir / "var").mkdir(exist_ok=True)
    cmd = [nginx, "-t", "-q", "-p", str(nginx_dir), "-c", "nginx.conf"]
    if os.geteuid() == 0:
        cmd += ["-g", "user root;"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        detail = " ".join(line.strip() for line in proc.stderr.splitlines() if "[emerg]" in line or "failed" in line)
        raise RenderError(f"nginx -t rejected the rendered config: {detail or proc.stderr.strip()}")


def write(
    out_dir: Path,
    public: Mapping[str, str],
    secret: Mapping[str, str],
    *,
    validate: bool = True,
    nginx: Optional[str] = None,
) -> list[str]:
    """Write the set atomically (temp dir + swap); returns the relative paths written."""
    out_dir = Path(out_dir).absolute()
    foreign = foreign_files(out_dir)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise RenderError(f"{out_dir} contains files Corral did not write ({shown}); refusing to overwrite")
    overlap = set(public) & set(secret)
    if overlap:
        raise RenderError(f"rendered twice: {sorted(overlap)}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.render-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        for files, mode in ((public, PUBLIC_MODE), (secret, SECRET_MODE)):
            for rel, text in files.items():
                path = tmp / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                    fh.write(text)
                os.chmod(path, mode)
        names = sorted([*public, *secret])
        manifest = {"generator": "corral stack render", "files": names, "secret": sorted(secret)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp / MANIFEST, PUBLIC_MODE)
        if MAIN_CONF in public:
            nginx_bin = nginx or shutil.which("nginx")
            if validate and nginx_bin:
                nginx_test(tmp / Path(MAIN_CONF).parent, nginx_bin)
            shutil.rmtree(tmp / RUNTIME_DIR, ignore_errors=True)
            # Empty, so that `nginx -p DIR/nginx -c nginx.conf` runs right away (nginx creates
            # no directory for its pid and logs); a previous set's runtime files replace it.
            (tmp / RUNTIME_DIR).mkdir(mode=0o755)
        _swap(tmp, out_dir)
        tmp = None
        return sorted([*names, MANIFEST])
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _swap(new: Path, out_dir: Path) -> None:
    """Replace `out_dir` by `new`, carrying nginx's runtime directory over (open logs keep working)."""
    if not out_dir.exists():
        os.rename(new, out_dir)
        return
    runtime = out_dir / RUNTIME_DIR
    if runtime.is_dir():
        carried = new / RUNTIME_DIR
        if carried.is_dir():
            carried.rmdir()  # the new set's empty one
        carried.parent.mkdir(parents=True, exist_ok=True)
        os.rename(runtime, carried)
    if _exchange(new, out_dir):
        shutil.rmtree(new, ignore_errors=True)  # now the previous set
        return
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    os.rename(out_dir, old)
    os.rename(new, out_dir)
    shutil.rmtree(old, ignore_errors=True)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False  # unsupported by the kernel or the file system: two renames instead
    raise OSError(err, os.strerror(err), str(b))


def _previous_public(out_dir: Path) -> list[str]:
    manifest = _manifest(out_dir) if out_dir.is_dir() else None
    if not manifest:
        return []
    secret = set(manifest.get("secret", []))
    return [f for f in manifest["files"] if f not in secret]


def changes(out_dir: Path, public: Mapping[str, str]) -> list[tuple[str, str]]:
    """What a render would do to the public files: ("create" | "update" | "delete", path), sorted.

    For `stack plan`, which lists rendered files that would change beside the models.
    """
    out_dir = Path(out_dir)
    result = []
    for rel in sorted(set(public) | set(_previous_public(out_dir))):
        path = out_dir / rel
        old = path.read_text(encoding="utf-8") if path.is_file() else None
        new = public.get(rel)
        if old == new:
            continue
        result.append(("create" if old is None else "delete" if new is None else "update", rel))
    return result


def check(out_dir: Path, public: Mapping[str, str]) -> str:
    """A unified diff from the files on disk to the rendered public files ('' when equal).

    Secret files are not compared (CI does not hold the secrets); files the last render
    wrote that this render no longer produces show as removed.
    """
    out_dir = Path(out_dir)
    chunks: list[str] = []
    for rel in sorted(set(public) | set(_previous_public(out_dir))):
        path = out_dir / rel
        old = path.read_text(encoding="utf-8") if path.is_file() else None
        new = public.get(rel)
        if old == new:
            continue
        chunks.extend(
            difflib.unified_diff(
                (old or "").splitlines(keepends=True),
                (new or "").splitlines(keepends=True),
                fromfile=f"a/{rel}" if old is not None else "/dev/null",
                tofile=f"b/{rel}" if new is not None else "/dev/null",
            )
        )
    return "".join(c if c.endswith("\n") else c + "\n\\ No newline at end of file\n" for c in chunks)
