"""`stack pull` / `stack push` rendering of the server's progress stream."""

from __future__ import annotations

import io

from rich.console import Console

from toolchain.progress import show_progress


def test_progress_bars_and_status_lines():
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    d = "sha256:" + "ab" * 32
    show_progress(
        iter([
            {"status": "pulling manifest"},
            {"status": "pulling ababababab", "digest": d, "total": 2048, "completed": 0},
            {"status": "pulling ababababab", "digest": d, "total": 2048, "completed": 2048},
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "success"},
        ]),
        console,
    )
    text = out.getvalue()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert [ln for ln in lines if not ln.startswith("pulling abab")] == [
        "pulling manifest", "verifying sha256 digest", "writing manifest", "success"
    ]
    bar = [ln for ln in lines if ln.startswith("pulling abab")]
    assert len(bar) == 1 and "2.0/2.0 kB" in bar[0]
