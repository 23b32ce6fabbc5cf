"""TextStream: UTF-8 and stop-sequence hold-back (pure)."""

from __future__ import annotations

import pytest

from server.runner.text import TextStream
from server.runner.types import SamplingOptions
from server.runner.errors import InvalidRequest


def feed_all(stream: TextStream, parts: list[bytes]) -> list[str]:
    out = [stream.feed(p) for p in parts]
    out.append(stream.finish())
    return out


@pytest.mark.parametrize(
    "parts, stops, emitted, stopped",
    [
        ([b"Hello", b" world"], (), ["Hello", " world", ""], False),
        # a multi-byte character split over tokens is held until complete
        (["é".encode()[:1], "é".encode()[1:], b"!"], (), ["", "é", "!", ""], False),
        ([b"\xf0\x9f", b"\x98", b"\x80 ok"], (), ["", "", "\U0001F600 ok", ""], False),
        # an incomplete sequence at the end becomes U+FFFD
        ([b"a", b"\xe2\x82"], (), ["a", "", "\ufffd"], False),
        # stop sequence inside one token
        ([b"abc", b"dSTOPef"], ("STOP",), ["abc", "d"], True),
        # stop sequence across tokens: the partial match is held back, then dropped
        ([b"ab", b"ST", b"O", b"P", b"zz"], ("STOP",), ["ab", "", "", ""], True),
        # a partial match that turns out not to be one is released
        ([b"ab", b"ST", b"Ox"], ("STOP",), ["ab", "", "STOx", ""], False),
        # held text is flushed at the end of generation
        ([b"ab", b"ST"], ("STOP",), ["ab", "", "ST"], False),
        # the earliest of several stop sequences wins
        ([b"xx<end>yy</s>"], ("</s>", "<end>"), ["xx"], True),
    ],
)
def test_text_stream(parts, stops, emitted, stopped):
    s = TextStream(stops)
    out = []
    for p in parts:
        out.append(s.feed(p))
        if s.stopped:
            break
    else:
        out.append(s.finish())
    assert out == emitted
    assert s.stopped is stopped


@pytest.mark.parametrize(
    "options, field, value",
    [
        ({}, "temperature", 0.8),
        ({"temperature": 0}, "temperature", 0.0),
        ({"top_k": 5.0}, "top_k", 5),
        ({"stop": "x"}, "stop", ("x",)),
        ({"stop": ["a", "", "b"]}, "stop", ("a", "b")),
        ({"num_ctx": 99, "seed": 3}, "seed", 3),
        ({"num_predict": None}, "num_predict", -1),
    ],
)
def test_sampling_options(options, field, value):
    assert getattr(SamplingOptions.from_options(options), field) == value


@pytest.mark.parametrize(
    "options, message",
    [
        ({"top_k": "5"}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"temperature": True}, "temperature"),
        ({"stop": [1]}, "stop"),
        ({"num_predict": -5}, "num_predict"),
        ({"temperature": -1}, "temperature"),
    ],
)
def test_sampling_options_refused(options, message):
    with pytest.raises(InvalidRequest, match=message):
        SamplingOptions.from_options(options)
