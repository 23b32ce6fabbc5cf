"""Turning generated token pieces into text that is safe to stream (pure, no llama.cpp).

Two hold-backs: bytes of an incomplete UTF-8 sequence wait for the next token, and text that could
be the start of a stop sequence waits until it is known not to be one; a stop sequence itself is
never emitted.
"""

from __future__ import annotations

import codecs


class TextStream:
    """Feed token bytes in, get emittable text out; `stopped` once a stop sequence appeared."""

    __slots__ = ("_decoder", "_stops", "_max_stop", "_held", "stopped")

    def __init__(self, stops: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in stops if s)
        self._max_stop = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add one token's bytes; return the text that can be emitted now."""
        text = self._decoder.decode(data)
        if not self._stops:
            return text
        if not text:
            return ""
        held = self._held + text
        # A stop sequence can only start inside the held part or the new text.
        first = -1
        for s in self._stops:
            i = held.find(s)
            if i >= 0 and (first < 0 or i < first):
                first = i
        if first >= 0:
            self.stopped = True
            self._held = ""
            return held[:first]
        keep = self._partial_suffix(held)
        self._held = held[len(held) - keep :] if keep else ""
        return held[: len(held) - keep]

    def finish(self) -> str:
        """End of generation (not by a stop sequence): flush what was held back."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop sequence."""
        n = min(len(text), self._max_stop - 1)
        for k in range(n, 0, -1):
            tail = text[-k:]
            for s in self._stops:
                if s.startswith(tail):
                    return k
        return 0
