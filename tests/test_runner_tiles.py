"""A short remainder after a long cached prefix is padded to flash attention's tile (engine.FA_TILE)."""

from __future__ import annotations

import pytest

from server.runner.engine import FA_TILE, PAD_MIN_CACHED, PAD_MIN_NEW, tile_aligned_reuse
from tests.test_runner import generate_letters, run, start

CASES = [
    # (cached, prompt tokens, flash attention, alone) -> tokens of the cache reused
    ((900, 959, None, True), 959 - FA_TILE),  # a chat's next turn: 59 new tokens padded to 64
    ((900, 959, True, True), 959 - FA_TILE),
    ((900, 959, False, True), 900),  # flash attention off: one kernel for every size
    ((900, 959, None, False), 900),  # other slots decode beside it: no padding
    ((PAD_MIN_CACHED - 1, PAD_MIN_CACHED + 58, None, True), PAD_MIN_CACHED - 1),  # history too short
    ((900, 900 + PAD_MIN_NEW - 1, None, True), 900),  # too few new tokens to be worth a tile
    ((900, 900 + PAD_MIN_NEW, None, True), 900 + PAD_MIN_NEW - FA_TILE),
    ((900, 900 + FA_TILE, None, True), 900),  # already a tile
    ((900, 1000, None, True), 900),
    ((0, 50, None, True), 0),
]


@pytest.mark.parametrize("args,want", CASES)
def test_tile_aligned_reuse(args, want):
    assert tile_aligned_reuse(*args) == want


@pytest.mark.parametrize("flash_attention,evaluated", [(None, FA_TILE), (False, 50)])
def test_a_next_turn_after_a_long_history_evaluates_a_whole_tile(tiny_gguf, flash_attention, evaluated):
    async def scenario():
        r = await start(tiny_gguf, num_ctx=2048, num_parallel=2, num_batch=512, flash_attention=flash_attention)
        try:
            history = await r.tokenize("the sky is blue and " * 50)
            assert len(history) >= PAD_MIN_CACHED + 1
            await generate_letters(r, history, num_predict=1, temperature=0)
            turn = history + (await r.tokenize("hello world " * 10, add_special=False))[:50]
            _, final = await generate_letters(r, turn, num_predict=4, temperature=0)
            assert final.stats.prompt_tokens == len(turn)
            assert final.stats.prompt_eval_count == evaluated
            assert final.stats.cached_tokens == len(turn) - evaluated
            assert final.stats.eval_count == 4
        finally:
            await r.close()

    run(scenario())
