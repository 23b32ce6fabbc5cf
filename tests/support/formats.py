"""Output formats for tests that need a generation only a disconnect can end."""

from __future__ import annotations


def nested_arrays(depth: int = 8, width: int = 8) -> dict:
    """A JSON schema whose shortest valid answer has width**depth numbers.

    The grammar never lets the model stop, and context shift keeps it going, so a
    generation under this format runs until its client goes away.
    """
    schema: dict = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "array", "minItems": width, "items": schema}
    return schema


NEVER_DONE = nested_arrays()
