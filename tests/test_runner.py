"""The runner: a real runner process over real llama.cpp (tiny random-weight GGUF; Gemma for e2e)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
from pathlib import Path

import pytest

from server.runner import (
    CompletionRequest,
    InputTooLong,
    InvalidRequest,
    LoadError,
    LoadTimeout,
    LoadSpec,
    Runner,
    RunnerClosed,
    RunnerCrashed,
    SamplingOptions,
)

HANG_GUARD = 120  # seconds: only to turn a hang into a failure, never a performance assertion


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, HANG_GUARD))


async def start(path: Path, **kw) -> Runner:
    kw.setdefault("num_ctx", 256)
    kw.setdefault("num_parallel", 4)
    kw.setdefault("num_batch", 64)
    return await Runner.start(LoadSpec(model_path=str(path), **kw), load_timeout=60)


async def generate(runner: Runner, prompt, **options) -> tuple[str, object]:
    req = CompletionRequest(prompt=prompt, options=SamplingOptions.from_options(options))
    stream = await runner.completion(req)
    text = []
    async for chunk in stream:
        if chunk.done:
            return "".join(text), chunk
        text.append(chunk.text)
    raise AssertionError("stream ended without a final chunk")


# A grammar that makes the tiny model generate exactly num_predict tokens: it can never end,
# so EOS is never allowed (letters and spaces forever).
LETTERS = 'root ::= [a-z ] root'  # no end: the grammar never allows EOS


async def generate_letters(runner: Runner, prompt, **options):
    req = CompletionRequest(prompt=prompt, options=SamplingOptions.from_options(options), grammar=LETTERS)
    stream = await runner.completion(req)
    text = []
    async for chunk in stream:
        if chunk.done:
            return "".join(text), chunk
        text.append(chunk.text)
    raise AssertionError("no final chunk")


def test_model_info(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_ctx=128, num_parallel=3)
        try:
            i = r.info
            assert i.n_ctx_per_slot == 128 and i.n_parallel == 3 and i.n_ctx == 384
            assert i.n_ctx_train == 2048
            assert i.n_embd == 64 and i.embedding_length == 64
            assert i.bos_text == "<s>" and i.eos_text == "</s>" and i.bos_token == 1 and i.eos_token == 2
            assert i.n_vocab > 300
            assert i.chat_template is None
            assert i.metadata["general.name"] == "tiny-llama"
            assert r.alive and r.pid > 0 and r.active_requests == 0
        finally:
            await r.close()
        assert not r.alive
        with pytest.raises(ProcessLookupError):  # the process is gone (and reaped): memory is back
            os.kill(r.pid, 0)

    run(scenario())


def test_parallel_requests_all_complete_with_exact_counts(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_parallel=4)
        try:
            prompts = [f"the sky is {w}" for w in ("blue", "red", "green", "a", "b", "c")]  # 6 > 4 slots
            results = await asyncio.gather(
                *(generate_letters(r, p, num_predict=12, temperature=0.7, seed=i) for i, p in enumerate(prompts))
            )
            for text, final in results:
                assert final.done_reason == "length"
                assert final.stats.eval_count == 12
                assert final.stats.prompt_eval_count > 0
                assert final.stats.prompt_eval_duration > 0 and final.stats.eval_duration > 0
                assert text and set(text) <= set("abcdefghijklmnopqrstuvwxyz ")
            assert r.active_requests == 0
        finally:
            await r.close()

    run(scenario())


def test_same_seed_same_output_alone_or_batched(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_parallel=4)
        try:
            alone, _ = await generate(r, "hello world", num_predict=16, temperature=0.9, seed=7)
            # fresh slots for the batched run: other prompts do not share its prefix
            batch = await asyncio.gather(
                generate(r, "the sky is blue", num_predict=16, temperature=0.9, seed=1),
                generate(r, "hello world", num_predict=16, temperature=0.9, seed=7),
                generate(r, "a b c d e f", num_predict=16, temperature=0.9, seed=3),
                generate(r, "is the sky", num_predict=16, temperature=0.9, seed=4),
            )
            assert batch[1][0] == alone
            again, _ = await generate(r, "hello world", num_predict=16, temperature=0.9, seed=8)
            # (different seed, same prompt: allowed to differ; only checks it still runs)
            assert isinstance(again, str)
        finally:
            await r.close()

    run(scenario())


def test_cancel_frees_the_slot(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_parallel=1)
        try:
            req = CompletionRequest(prompt="hello", options=SamplingOptions(num_predict=-1), grammar=LETTERS)
            stream = await r.completion(req)
            got = await stream.__anext__()
            assert not got.done
            assert r.active_requests == 1
            await stream.aclose()
            assert r.active_requests == 0
            # the only slot must be free again: this would wait forever otherwise
            text, final = await generate_letters(r, "the sky", num_predict=3)
            assert final.stats.eval_count == 3
            # leaving an `async with` block cancels too
            stream = await r.completion(req)
            async with stream:
                async for chunk in stream:
                    break
            text, final = await generate_letters(r, "the sky", num_predict=3)
            assert final.done_reason == "length"
        finally:
            await r.close()

    run(scenario())


def test_cancel_a_request_still_waiting_for_a_slot(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_parallel=1)
        try:
            forever = CompletionRequest(prompt="hello", options=SamplingOptions(num_predict=-1), grammar=LETTERS)
            a = await r.completion(forever)
            await a.__anext__()
            b = await r.completion(forever)  # accepted, queued behind `a`
            assert r.active_requests == 2
            await b.aclose()
            await a.aclose()
            assert r.active_requests == 0
            _, final = await generate_letters(r, "the sky", num_predict=3)
            assert final.stats.eval_count == 3
        finally:
            await r.close()

    run(scenario())


def test_stop_sequences_are_never_emitted(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_parallel=2)
        try:
            full, final = await generate_letters(r, "the sky", num_predict=40, temperature=0)
            assert final.done_reason == "length" and len(full) >= 10
            stop = full[5:8]
            cut = full.index(stop)
            text, final = await generate_letters(r, "the sky", num_predict=40, temperature=0, stop=[stop, "zzzzzzzz"])
            assert final.done_reason == "stop"
            assert text == full[:cut]
            assert stop not in text
        finally:
            await r.close()

    run(scenario())


def test_prompt_cache_evaluates_only_new_tokens(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_parallel=2)
        try:
            first = "the sky is blue and the sky is"
            _, f1 = await generate_letters(r, first, num_predict=2, temperature=0)
            n_first = len(await r.tokenize(first))
            assert f1.stats.cached_tokens == 0 and f1.stats.prompt_eval_count == n_first
            # the next turn extends the previous prompt
            second = first + " blue and hello world"
            n_second = len(await r.tokenize(second))
            _, f2 = await generate_letters(r, second, num_predict=2, temperature=0)
            assert f2.stats.prompt_tokens == n_second
            assert f2.stats.cached_tokens >= n_first - 1
            assert f2.stats.prompt_eval_count == n_second - f2.stats.cached_tokens
            assert f2.stats.prompt_eval_count < n_second // 2
            # the context returned is prompt + generated tokens
            assert f2.context[:n_second] == await r.tokenize(second)
            assert len(f2.context) == n_second + 2
            # the same prompt again: everything but the last token comes from the cache
            _, f3 = await generate_letters(r, second, num_predict=2, temperature=0)
            assert f3.stats.prompt_eval_count == 1
        finally:
            await r.close()

    run(scenario())


@pytest.mark.parametrize("flash_attention", [True, False])
def test_flash_attention_on_or_off_serves_and_caches(tiny_gguf, flash_attention):
    # OLLAMA_FLASH_ATTENTION reaches llama.cpp's context: both settings decode, batch and reuse
    # the cache (the KV layout differs between them, so each is exercised on its own)
    async def scenario():
        r = await start(tiny_gguf, num_parallel=2, flash_attention=flash_attention)
        try:
            assert r.spec.flash_attention is flash_attention
            prompt = "the sky is blue and the sky is"
            (text, f1), (_, other) = await asyncio.gather(
                generate_letters(r, prompt, num_predict=12, temperature=0),
                generate_letters(r, "hello world", num_predict=12, temperature=0))
            assert f1.stats.eval_count == other.stats.eval_count == 12 and text
            _, f2 = await generate_letters(r, prompt + " blue", num_predict=2, temperature=0)
            assert f2.stats.cached_tokens >= len(await r.tokenize(prompt)) - 1
        finally:
            await r.close()

    run(scenario())


def test_num_predict_and_context_limits(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_ctx=64, num_parallel=2)
        try:
            # -2: fill the context, then stop with "length"
            _, final = await generate_letters(r, "hello", num_predict=-2)
            assert final.done_reason == "length"
            # every cell holds a token, and the last sampled one is returned too
            assert final.stats.prompt_eval_count + final.stats.eval_count == 65
            assert len(final.context) == 65
            # 0: the prompt is evaluated (and cached), nothing is generated
            text, final = await generate_letters(r, "hello", num_predict=0)
            assert text == "" and final.done_reason == "length" and final.stats.eval_count == 0
            assert final.stats.prompt_eval_count > 0
            # -1 with a context shift: generation continues past the context size
            _, final = await generate_letters(r, "hello", num_predict=150)
            assert final.done_reason == "length" and final.stats.eval_count == 150
            # a prompt longer than the context is truncated (num_keep kept), never an error
            long_prompt = " ".join(["the sky is blue"] * 40)
            n = len(await r.tokenize(long_prompt))
            assert n > 64
            _, final = await generate_letters(r, long_prompt, num_predict=4, num_keep=5)
            assert final.stats.truncated and final.stats.prompt_tokens < 64
            assert final.context[:5] == (await r.tokenize(long_prompt))[:5]
            assert final.done_reason == "length" and final.stats.eval_count == 4
        finally:
            await r.close()

    run(scenario())


def test_token_prompt_tokenize_detokenize(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_parallel=1)
        try:
            ids = await r.tokenize("hello world")
            assert ids[0] == 1  # BOS added
            assert await r.tokenize("hello world", add_special=False) == ids[1:]
            assert (await r.detokenize(ids)).lstrip() == "hello world"  # (SentencePiece space prefix)
            assert (await r.tokenize("<s>", add_special=False, parse_special=True)) == [1]
            assert (await r.tokenize("<s>", add_special=False, parse_special=False)) != [1]
            text_a, fa = await generate(r, "hello world", num_predict=5, temperature=0)
            text_b, fb = await generate(r, ids, num_predict=5, temperature=0)
            assert text_a == text_b
            with pytest.raises(InvalidRequest):
                await r.completion(CompletionRequest(prompt=[10**9]))
        finally:
            await r.close()

    run(scenario())


def test_bad_grammar_and_schema_are_refused_before_scheduling(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_parallel=1)
        try:
            with pytest.raises(InvalidRequest, match="grammar"):
                await r.completion(CompletionRequest(prompt="hi", grammar="root ::= ("))
            with pytest.raises(InvalidRequest, match="schema"):
                await r.completion(CompletionRequest(prompt="hi", format="{not json"))
            with pytest.raises(InvalidRequest, match="schema"):
                await r.completion(CompletionRequest(prompt="hi", format={"type": "object", "properties": 3}))
            with pytest.raises(InvalidRequest, match="num_predict"):
                await r.completion(CompletionRequest(prompt="hi", options={"num_predict": -3}))
            with pytest.raises(InvalidRequest, match="temperature"):
                await r.completion(CompletionRequest(prompt="hi", options={"temperature": "hot"}))
            assert r.active_requests == 0
            # nothing was left half-scheduled: the only slot still serves
            _, final = await generate_letters(r, "hi", num_predict=2)
            assert final.stats.eval_count == 2
            # "json" format: a grammar that only allows JSON
            req = CompletionRequest(prompt="hi", options=SamplingOptions(num_predict=8), format="json")
            stream = await r.completion(req)
            text = "".join([c.text async for c in stream])
            assert text.lstrip().startswith("{")
        finally:
            await r.close()

    run(scenario())


def test_embed_is_normalised_and_truncates(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_ctx=32, num_parallel=1)
        try:
            res = await r.embed(["hello world", "the sky is blue"])
            assert len(res.embeddings) == 2 and all(len(v) == 64 for v in res.embeddings)
            for v in res.embeddings:
                assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4)
            assert res.embeddings[0] != res.embeddings[1]
            assert res.prompt_eval_count == len(await r.tokenize("hello world")) + len(await r.tokenize("the sky is blue"))
            again = await r.embed("hello world")
            assert again.embeddings[0] == pytest.approx(res.embeddings[0], abs=1e-5)
            long_text = " ".join(["the sky is blue"] * 30)
            res = await r.embed([long_text], truncate=True)
            assert res.prompt_eval_count == 32
            with pytest.raises(InputTooLong, match="input length exceeds the context length"):
                await r.embed([long_text], truncate=False)
            # embeddings and generation share the runner
            _, final = await generate_letters(r, "hi", num_predict=2)
            assert final.stats.eval_count == 2
        finally:
            await r.close()

    run(scenario())


def test_crash_fails_inflight_requests_and_a_new_runner_starts(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_parallel=2)
        req = CompletionRequest(prompt="hello", options=SamplingOptions(num_predict=-1), grammar=LETTERS)
        streams = [await r.completion(req), await r.completion(req)]
        for s in streams:
            await s.__anext__()
        os.kill(r.pid, signal.SIGKILL)
        for s in streams:
            with pytest.raises(RunnerCrashed, match="SIGKILL"):
                async for _ in s:
                    pass
        assert not r.alive
        with pytest.raises(RunnerCrashed):
            await r.tokenize("x")
        with pytest.raises(RunnerCrashed):
            await r.completion(req)
        await r.close()
        r2 = await start(tiny_gguf, num_parallel=1)
        try:
            _, final = await generate_letters(r2, "hi", num_predict=2)
            assert final.stats.eval_count == 2
        finally:
            await r2.close()

    run(scenario())


def test_close_fails_inflight_with_runner_closed(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_parallel=1)
        req = CompletionRequest(prompt="hello", options=SamplingOptions(num_predict=-1), grammar=LETTERS)
        stream = await r.completion(req)
        await stream.__anext__()
        await r.close()
        with pytest.raises(RunnerClosed):
            async for _ in stream:
                pass
        assert not r.alive

    run(scenario())


def test_load_errors_are_clear(tiny_gguf, tmp_path):
    async def scenario():
        with pytest.raises(LoadError, match="not found"):
            await Runner.start(LoadSpec(model_path=str(tmp_path / "missing.gguf")), load_timeout=30)
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"GGUF" + b"\0" * 100)
        with pytest.raises(LoadError, match="failed to load model"):
            await Runner.start(LoadSpec(model_path=str(bad)), load_timeout=30)
        with pytest.raises(InvalidRequest, match="num_ctx"):
            LoadSpec(model_path=str(tiny_gguf), num_ctx=0)
        with pytest.raises(InvalidRequest, match="num_ctx"):
            LoadSpec(model_path=str(tiny_gguf), num_ctx=2**30, num_parallel=4)
        # a context whose KV cache cannot fit in memory is refused before llama.cpp allocates it
        with pytest.raises(LoadError, match="context too large"):
            await Runner.start(LoadSpec(model_path=str(tiny_gguf), num_ctx=2**28, num_parallel=4), load_timeout=30)
        with pytest.raises(LoadTimeout, match="timed out"):
            await Runner.start(LoadSpec(model_path=str(tiny_gguf)), load_timeout=0.001)

    run(scenario())


def test_lora_adapters(tiny_gguf, tmp_path):
    from server.runner import LoraAdapter
    from tests.support.tiny_lora import write_tiny_lora

    lora = write_tiny_lora(tmp_path / "lora.gguf")
    noop = write_tiny_lora(tmp_path / "noop.gguf", scale_b=0.0)

    async def greedy(adapters) -> str:
        r = await start(tiny_gguf, num_ctx=64, num_parallel=1, adapters=adapters)
        try:
            text, _ = await generate(r, "hello world", num_predict=12, temperature=0)
            return text
        finally:
            await r.close()

    async def scenario():
        base = await greedy(())
        assert await greedy((LoraAdapter(str(noop)),)) == base
        assert await greedy((LoraAdapter(str(lora)),)) != base
        assert await greedy((LoraAdapter(str(lora), scale=0.0),)) == base
        with pytest.raises(LoadError, match="LoRA"):
            await start(tiny_gguf, adapters=(LoraAdapter(str(tmp_path / "missing.gguf")),))

    run(scenario())


def test_embedding_only_runner(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_ctx=64, num_parallel=2, embedding=True)
        try:
            assert r.info.embedding_only
            res = await r.embed(["hello", "the sky is blue"])
            assert len(res.embeddings) == 2
            assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in res.embeddings)
            with pytest.raises(InvalidRequest, match="embeddings only"):
                await r.completion(CompletionRequest(prompt="hi"))
        finally:
            await r.close()

    run(scenario())


@pytest.mark.e2e
def test_gemma_real_text_and_json(gemma_gguf):
    async def scenario():
        r = await start(gemma_gguf, num_ctx=1024, num_parallel=2, num_batch=512)
        try:
            assert r.info.chat_template == r.info.metadata.get("tokenizer.chat_template")  # (none in this file)
            assert r.info.n_vocab == 262144
            # a base model: a completion prompt, and a stop sequence that ends the answer
            prompt = "Question: What is the capital of France?\nAnswer:"
            text, final = await generate(r, prompt, num_predict=16, temperature=0, stop=["\n"])
            assert text == " Paris" and final.done_reason == "stop"
            # the same request batched with others gives the same answer
            results = await asyncio.gather(
                *(generate(r, p, num_predict=16, temperature=0, stop=["\n"]) for p in [prompt, "Hello", prompt])
            )
            assert results[0][0] == results[2][0] == " Paris"
            schema = {
                "type": "object",
                "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
                "required": ["city", "population"],
            }
            prompt = (
                "<start_of_turn>user\nGive the capital of France and its population as JSON.<end_of_turn>\n"
                "<start_of_turn>model\n"
            )
            stream = await r.completion(
                CompletionRequest(prompt=prompt, options=SamplingOptions(num_predict=64, temperature=0), format=schema)
            )
            out = []
            async for chunk in stream:
                out.append(chunk.text)
            value = json.loads("".join(out))
            assert set(value) >= {"city", "population"} and isinstance(value["population"], int)
            emb = await r.embed(["Paris is the capital of France."])
            assert len(emb.embeddings[0]) == 640
        finally:
            await r.close()

    run(scenario())


async def generate_logprobs(runner: Runner, prompt, top: int, grammar=None, **options):
    """(text, final chunk, logprob entries of every chunk in order)."""
    req = CompletionRequest(prompt=prompt, options=SamplingOptions.from_options(options), grammar=grammar,
                            logprobs=True, top_logprobs=top)
    stream = await runner.completion(req)
    text, entries = [], []
    async for chunk in stream:
        entries.extend(chunk.logprobs or ())
        if chunk.done:
            return "".join(text), chunk, entries
        text.append(chunk.text)
    raise AssertionError("no final chunk")


def check_entry(e: dict, top: int) -> None:
    assert math.isfinite(e["logprob"]) and e["logprob"] <= 0
    assert bytes(e.get("bytes", [])).decode("utf-8", "replace") == e["token"]
    alts = e.get("top_logprobs", [])
    assert len(alts) == top
    values = [a["logprob"] for a in alts]
    assert values == sorted(values, reverse=True) and all(math.isfinite(v) and v <= 0 for v in values)
    assert math.fsum(math.exp(v) for v in values) <= 1 + 1e-6
    if alts:
        assert e["logprob"] <= values[0] + 1e-6  # the raw distribution: nothing beats the top-1


def test_logprobs_one_entry_per_generated_token_from_the_raw_distribution(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_parallel=2)
        try:
            greedy = {"temperature": 0, "repeat_penalty": 1.0}
            text, final, entries = await generate_logprobs(r, "the sky is", 5, LETTERS, num_predict=12, **greedy)
            assert final.done_reason == "length" and len(entries) == final.stats.eval_count == 12
            assert b"".join(bytes(e.get("bytes", [])) for e in entries).decode() == text
            for e in entries:
                check_entry(e, 5)
            # unconstrained greedy, no penalties: the sampled token is the most likely one
            _, final, entries = await generate_logprobs(r, "hello world", 3, num_predict=8, **greedy)
            assert len(entries) == final.stats.eval_count > 0
            for e in entries:
                check_entry(e, 3)
                best = e["top_logprobs"][0]
                assert (e["token"], e["logprob"]) == (best["token"], best["logprob"])
            # temperature shapes the sampler, not the reported distribution: the first position
            # (same prompt) reports the same values whatever the temperature (scaling the logits
            # by 1/1.8 would move them far more). To 1e-3: this time the cache holds the prompt and
            # its last token is evaluated alone, by another flash-attention kernel than the whole
            # prompt was (f16 against f32 sums)
            _, _, hot = await generate_logprobs(r, "hello world", 3, num_predict=1, temperature=1.8, seed=3)
            assert [a["logprob"] for a in hot[0]["top_logprobs"]] == pytest.approx(
                [a["logprob"] for a in entries[0]["top_logprobs"]], abs=1e-3)
            # top_logprobs 0: the sampled token only
            _, _, plain = await generate_logprobs(r, "hello world", 0, num_predict=3, **greedy)
            assert plain and all("top_logprobs" not in e for e in plain)
            # not asked: nothing computed, nothing sent
            req = CompletionRequest(prompt="hello world", options=SamplingOptions.from_options({"num_predict": 3}))
            async with await r.completion(req) as stream:
                chunks = [c async for c in stream]
            assert chunks[-1].done and all(c.logprobs is None for c in chunks)
            with pytest.raises(InvalidRequest, match="top_logprobs must be between 0 and 20"):
                await r.completion(CompletionRequest(prompt="x", logprobs=True, top_logprobs=21))
        finally:
            await r.close()

    run(scenario())


def test_logprobs_come_from_each_sequence_s_own_row_of_the_batch(tiny_gguf):
    async def scenario():
        r = await start(tiny_gguf, num_parallel=3)
        try:
            opts = {"num_predict": 20, "temperature": 0}
            fixed = 'root ::= "the answer"'  # the same tokens whatever the logits: values comparable
            _, _, alone = await generate_logprobs(r, "the sky is blue", 2, fixed, **opts)
            batched = await asyncio.gather(
                generate_logprobs(r, "hello world", 2, fixed, **opts),
                generate_logprobs(r, "the sky is blue", 2, fixed, **opts),
                generate_letters(r, "a b c", num_predict=6, temperature=0),
            )
            together, other = batched[1][2], batched[0][2]
            assert [e["token"] for e in together] == [e["token"] for e in alone] == [e["token"] for e in other]
            assert [e["logprob"] for e in together] == pytest.approx([e["logprob"] for e in alone], abs=1e-3)
            assert [e["logprob"] for e in other] != pytest.approx([e["logprob"] for e in alone], abs=1e-3)
        finally:
            await r.close()

    run(scenario())
