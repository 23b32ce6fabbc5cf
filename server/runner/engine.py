"""The batch engine: one llama.cpp model + context, many slots, one `llama_decode` per step.

Runs inside the runner process (server/runner/process.py) on its main thread. Each step gathers
the next token of every generating slot plus up to a budget of prompt tokens of prefilling slots
into one batch, decodes it, samples every slot that produced an output with its own sampler,
and hands the step's text deltas to `emit` in one call.

Slots keep their KV cache after a request ends; a new request goes to the free slot whose cached
tokens share the longest prefix with its prompt (least recently used on ties) and evaluates only
the rest.
"""

from __future__ import annotations

import collections
import ctypes
import os
import queue
import time
from typing import Any, Callable

import llama_cpp as L
import numpy as np

from server.runner.errors import InputTooLong, InvalidRequest, LoadError
from server.runner.logprobs import MAX_TOP, token_logprob
from server.runner.sampling import ConstrainedSampler, Sampler, build_grammar, format_grammar, logits_row
from server.runner.text import TextStream
from server.runner.types import CompletionRequest, LoadSpec, ModelInfo, SamplingOptions

_now = time.perf_counter_ns
GATHER_WINDOW = 0.003  # seconds an idle engine waits for more requests before its first step

# ---------------------------------------------------------------------------------------------
# llama.cpp logging: keep warnings/errors for load error messages, drop the rest (or echo all
# to stderr with CORRAL_RUNNER_LOG=1).

_LOG_TAIL: collections.deque[str] = collections.deque(maxlen=20)
_LOG_ECHO = os.environ.get("CORRAL_RUNNER_LOG") == "1"


@L.llama_log_callback
def _log_cb(level: int, text: bytes, _user: Any) -> None:  # pragma: no cover - called from C
    s = text.decode("utf-8", "replace") if text else ""
    if _LOG_ECHO:
        os.write(2, s.encode())
    if level >= 3 and s.strip():  # GGML_LOG_LEVEL_WARN, ERROR (and CONT after them)
        _LOG_TAIL.append(s.strip())


def _log_hint() -> str:
    return ("; llama.cpp said: " + " | ".join(list(_LOG_TAIL)[-3:])) if _LOG_TAIL else ""


_BACKEND_READY = False


def _backend_init() -> None:
    global _BACKEND_READY
    if not _BACKEND_READY:
        L.llama_log_set(_log_cb, None)
        L.llama_backend_init()
        _BACKEND_READY = True


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------------------------


class Active:
    """A request admitted to the engine (prepared by `Engine.prepare`)."""

    __slots__ = (
        "rid", "prompt", "opts", "sampler", "stream", "slot", "n_done", "pending",
        "generated", "t_prompt", "t_gen", "t_last", "prompt_eval_count", "cached",
        "truncated", "limit", "grammar", "top", "lps",
    )

    def __init__(
        self, rid: int, prompt: list[int], opts: SamplingOptions, sampler: Sampler | None, grammar: Any,
        truncated: bool,
        top: int = -1,
    ):
        self.rid = rid
        self.prompt = prompt
        self.opts = opts
        self.sampler = sampler
        self.grammar = grammar  # separate grammar sampler or None
        self.stream = TextStream(opts.stop)
        self.slot: Slot | None = None
        self.n_done = 0  # prompt tokens in the KV cache
        self.pending: int | None = None  # sampled token not yet decoded
        self.generated: list[int] = []
        self.t_prompt = 0
        self.t_gen = 0
        self.t_last = 0
        self.prompt_eval_count = 0
        self.cached = 0
        self.truncated = truncated
        self.limit = opts.num_predict
        self.top = top  # logprobs: -1 = not asked, else the number of alternatives
        self.lps: list[dict] = []  # logprobs of tokens whose text has not been emitted yet


class Slot:
    __slots__ = ("id", "tokens", "active", "used")

    def __init__(self, sid: int) -> None:
        self.id = sid
        self.tokens: list[int] = []  # exactly what this sequence holds in the KV cache
        self.active: Active | None = None
        self.used = 0


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# One event per request and step: (rid, text, final or None, logprobs or None)
Event = tuple[int, str, "dict | None", "list[dict] | None"]
Emit = Callable[[list[Event]], None]


class Engine:
    def __init__(self, spec: LoadSpec) -> None:
        _backend_init()
        self.spec = spec
        if not os.path.isfile(spec.model_path):
            raise LoadError(f"model file not found: {spec.model_path}")
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        mp.use_mmap = spec.use_mmap
        _LOG_TAIL.clear()
        self.model = L.llama_model_load_from_file(spec.model_path.encode(), mp)
        if not self.model:
            raise LoadError(f"failed to load model {spec.model_path}{_log_hint()}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.n_embd = L.llama_model_n_embd(self.model)
        self.adapters = []
        for ad in spec.adapters:
            a = L.llama_adapter_lora_init(self.model, ad.path.encode())
            if not a:
                raise LoadError(f"failed to load LoRA adapter {ad.path}{_log_hint()}")
            self.adapters.append(a)

        np_ = spec.num_parallel
        self._check_memory(spec.num_ctx * np_)
        ubatch = spec.num_ubatch or min(spec.num_batch, 512)
        cp = L.llama_context_default_params()
        cp.n_ctx = spec.num_ctx * np_
        cp.n_seq_max = np_
        cp.n_batch = spec.num_batch if not spec.embedding else spec.num_ctx
        cp.n_ubatch = min(ubatch, cp.n_batch) if not spec.embedding else spec.num_ctx
        cp.n_threads = spec.num_threads
        cp.n_threads_batch = spec.num_threads
        cp.swa_full = True
        cp.kv_unified = False
        cp.no_perf = True
        cp.embeddings = spec.embedding
        cp.flash_attn_type = {None: L.LLAMA_FLASH_ATTN_TYPE_AUTO, True: L.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                              False: L.LLAMA_FLASH_ATTN_TYPE_DISABLED}[spec.flash_attention]
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            L.llama_model_free(self.model)
            self.model = None
            raise LoadError(
                f"failed to create a context of {cp.n_ctx} tokens ({np_} × num_ctx {spec.num_ctx})"
                f" for {spec.model_path}{_log_hint()}"
            )
        if self.adapters:
            arr = (L.llama_adapter_lora_p_ctypes * len(self.adapters))(*self.adapters)
            scales = (ctypes.c_float * len(self.adapters))(*[a.scale for a in spec.adapters])
            if L.llama_set_adapters_lora(self.ctx, arr, len(self.adapters), scales) != 0:
                raise LoadError(f"failed to apply LoRA adapters{_log_hint()}")
        self.mem = L.llama_get_memory(self.ctx)
        # llama.cpp pads each sequence's cells to a multiple of 256; the slot limit is what was asked
        self.n_ctx_slot = min(spec.num_ctx, L.llama_n_ctx_seq(self.ctx))
        self.can_shift = bool(L.llama_memory_can_shift(self.mem))
        self.n_batch = L.llama_n_batch(self.ctx)
        self.batch = L.llama_batch_init(max(self.n_batch, np_), 0, 1)
        self.slots = [Slot(i) for i in range(np_)]
        self.waiting: collections.deque[Active] = collections.deque()
        self.prefill_order: list[Active] = []
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self._use = 0
        self._csampler: ConstrainedSampler | None = None
        self._embed_ctx = self.ctx if spec.embedding else None
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        self.info = self._info()

    def _check_memory(self, n_ctx: int) -> None:
        """Refuse a context whose KV cache cannot fit in the memory available now (llama.cpp would
        otherwise try, and touch, tens of GiB before failing)."""
        arch = self._meta_str("general.architecture")
        n_layer = L.llama_model_n_layer(self.model)
        n_head = max(1, L.llama_model_n_head(self.model))
        n_head_kv = max(1, L.llama_model_n_head_kv(self.model))
        k_len = int(self._meta_str(f"{arch}.attention.key_length") or self.n_embd // n_head)
        v_len = int(self._meta_str(f"{arch}.attention.value_length") or self.n_embd // n_head)
        need = n_ctx * n_layer * n_head_kv * (k_len + v_len) * 2  # f16 K and V
        avail = _mem_available()
        if avail is not None and need > avail:
            L.llama_model_free(self.model)
            self.model = None
            raise LoadError(
                f"context too large: {n_ctx} tokens need {need / 2**30:.1f} GiB of KV cache,"
                f" {avail / 2**30:.1f} GiB of memory is available"
            )

    def _meta_str(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = L.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    # --- model facts -------------------------------------------------------------------------

    def _meta(self) -> dict[str, str]:
        out: dict[str, str] = {}
        buf = ctypes.create_string_buffer(1024)
        for i in range(L.llama_model_meta_count(self.model)):
            n = L.llama_model_meta_key_by_index(self.model, i, buf, len(buf))
            if n < 0:
                continue
            key = buf.value.decode("utf-8", "replace")
            n = L.llama_model_meta_val_str_by_index(self.model, i, buf, len(buf))
            if n >= len(buf):
                big = ctypes.create_string_buffer(n + 1)
                L.llama_model_meta_val_str_by_index(self.model, i, big, len(big))
                out[key] = big.value.decode("utf-8", "replace")
            elif n >= 0:
                out[key] = buf.value.decode("utf-8", "replace")
        return out

    def _info(self) -> ModelInfo:
        meta = self._meta()
        bos = L.llama_vocab_bos(self.vocab)
        eos = L.llama_vocab_eos(self.vocab)
        desc = ctypes.create_string_buffer(256)
        L.llama_model_desc(self.model, desc, len(desc))
        tmpl = L.llama_model_chat_template(self.model, None)
        return ModelInfo(
            n_ctx_per_slot=self.n_ctx_slot,
            n_ctx=self.n_ctx_slot * self.spec.num_parallel,
            n_parallel=self.spec.num_parallel,
            n_ctx_train=L.llama_model_n_ctx_train(self.model),
            n_vocab=self.n_vocab,
            n_embd=self.n_embd,
            chat_template=tmpl.decode("utf-8", "replace") if tmpl else meta.get("tokenizer.chat_template"),
            bos_token=bos if bos >= 0 else None,
            eos_token=eos if eos >= 0 else None,
            bos_text=self.piece(bos, special=True).decode("utf-8", "replace") if bos >= 0 else "",
            eos_text=self.piece(eos, special=True).decode("utf-8", "replace") if eos >= 0 else "",
            add_bos=bool(L.llama_vocab_get_add_bos(self.vocab)),
            metadata=meta,
            description=desc.value.decode("utf-8", "replace"),
            size=L.llama_model_size(self.model),
            n_params=L.llama_model_n_params(self.model),
            embedding_only=self.spec.embedding,
        )

    # --- tokens (thread-safe: read-only use of the vocabulary) --------------------------------

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        return list(buf[:n])

    def detokenize(self, tokens: list[int], special: bool = False) -> str:
        for t in tokens:
            if not isinstance(t, int) or t < 0 or t >= self.n_vocab:
                raise InvalidRequest(f"invalid token id {t!r}")
        arr = (L.llama_token * max(1, len(tokens)))(*tokens)
        cap = 16 * len(tokens) + 16
        buf = ctypes.create_string_buffer(cap)
        n = L.llama_detokenize(self.vocab, arr, len(tokens), buf, cap, True, special)
        if n < 0:
            cap = -n + 1
            buf = ctypes.create_string_buffer(cap)
            n = L.llama_detokenize(self.vocab, arr, len(tokens), buf, cap, True, special)
        return buf.raw[:n].decode("utf-8", "replace")

    def piece(self, tok: int, special: bool = False) -> bytes:
        buf = self._piece_buf if not special else ctypes.create_string_buffer(256)
        n = L.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, special)
        return buf.raw[:n]

    # --- requests ----------------------------------------------------------------------------

    def prepare(self, rid: int, req: CompletionRequest) -> Active:
        """Tokenize, truncate and build the sampler; raises InvalidRequest. Runs on the
        process's reader thread so the batch loop is not held up."""
        if self.spec.embedding:
            raise InvalidRequest("this model is loaded for embeddings only; it cannot generate")
        opts = req.options if isinstance(req.options, SamplingOptions) else SamplingOptions.from_options(req.options)
        top = -1
        if req.logprobs:
            top = req.top_logprobs
            if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP:
                raise InvalidRequest(f"top_logprobs must be between 0 and {MAX_TOP}")
        grammar = req.grammar or format_grammar(req.format)
        if isinstance(req.prompt, str):
            prompt = self.tokenize(req.prompt, add_special=req.add_special, parse_special=True)
            bos = L.llama_vocab_bos(self.vocab)
            if len(prompt) > 1 and prompt[0] == prompt[1] == bos:
                del prompt[0]  # the template wrote BOS itself (e.g. "{{ bos_token }}"): keep one
        else:
            prompt = list(req.prompt)
            for t in prompt:
                if not isinstance(t, int) or t < 0 or t >= self.n_vocab:
                    raise InvalidRequest(f"invalid token id {t!r} in prompt")
        if not prompt:
            bos = L.llama_vocab_bos(self.vocab)
            if bos < 0:
                raise InvalidRequest("empty prompt")
            prompt = [bos]
        truncated = False
        if len(prompt) >= self.n_ctx_slot:
            prompt = self._truncate(prompt, opts.num_keep)
            truncated = True
        gsampler = build_grammar(self.vocab, grammar) if grammar else None
        return Active(rid, prompt, opts, Sampler(self.n_vocab, opts, prompt), gsampler, truncated, top)

    def _truncate(self, prompt: list[int], num_keep: int) -> list[int]:
        """Ollama/llama-server rule: keep the first num_keep tokens, drop whole blocks of half the
        remaining context after them, so the prompt fits with room to generate."""
        n_ctx = self.n_ctx_slot
        keep = max(0, min(num_keep, n_ctx // 2))
        if self.add_bos and keep == 0 and prompt and prompt[0] == L.llama_vocab_bos(self.vocab):
            keep = 1
        block = max(1, (n_ctx - keep) // 2)
        erased = max(1, (len(prompt) - keep - block + block - 1) // block)
        out = prompt[:keep] + prompt[keep + erased * block :]
        if len(out) >= n_ctx:  # degenerate settings: keep the tail
            out = prompt[:keep] + prompt[len(prompt) - (n_ctx // 2 - keep) :]
        return out

    # --- the loop ----------------------------------------------------------------------------

    def busy(self) -> bool:
        return bool(self.waiting) or any(s.active for s in self.slots)

    def run(self, emit: Emit, handle: Callable[[tuple], bool]) -> None:
        """Serve until `handle` returns False (close). `handle` processes one inbox message."""
        inbox = self.inbox
        while True:
            if not self.busy():
                msg = inbox.get()
                if not handle(msg):
                    return
                # Woken from idle: requests sent together (a client's parallel calls, closed-loop
                # clients finishing in the same step) arrive a fraction of a millisecond apart;
                # gather them so they share the first step instead of each waiting a step.
                deadline = time.monotonic() + GATHER_WINDOW
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        msg = inbox.get(timeout=left)
                    except queue.Empty:
                        break
                    if not handle(msg):
                        return
            while True:
                try:
                    msg = inbox.get_nowait()
                except queue.Empty:
                    break
                if not handle(msg):
                    return
            if self.busy():
                emit(self.step())

    def admit(self, a: Active) -> None:
        self.waiting.append(a)

    def cancel(self, rid: int) -> None:
        for a in list(self.waiting):
            if a.rid == rid:
                self.waiting.remove(a)
                self._free_samplers(a)
                return
        for s in self.slots:
            if s.active is not None and s.active.rid == rid:
                self._release(s.active)
                return

    def _release(self, a: Active) -> None:
        s = a.slot
        if s is not None:
            s.active = None
        if a in self.prefill_order:
            self.prefill_order.remove(a)
        self._free_samplers(a)

    @staticmethod
    def _free_samplers(a: Active) -> None:
        if a.sampler:
            a.sampler.free()
            a.sampler = None
        if a.grammar:
            L.llama_sampler_free(a.grammar)
            a.grammar = None

    def _place_waiting(self) -> None:
        while self.waiting:
            free = [s for s in self.slots if s.active is None]
            if not free:
                return
            a = self.waiting.popleft()
            best = max(free, key=lambda s: (_common_prefix(s.tokens, a.prompt), -s.used))
            n = _common_prefix(best.tokens, a.prompt)
            if n >= len(a.prompt):
                n = len(a.prompt) - 1  # evaluate at least one token to get logits
            if n < len(best.tokens):
                if not L.llama_memory_seq_rm(self.mem, best.id, n, -1):
                    L.llama_memory_seq_rm(self.mem, best.id, -1, -1)
                    n = 0
                del best.tokens[n:]
            self._use += 1
            best.used = self._use
            best.active = a
            a.slot = best
            a.n_done = n
            a.cached = n
            a.prompt_eval_count = len(a.prompt) - n
            self.prefill_order.append(a)

    def _shift(self, a: Active) -> bool:
        """Context full while generating: drop half of what follows num_keep (Ollama's rule)."""
        s = a.slot
        n_past = len(s.tokens)
        if not self.can_shift or a.limit == -2:
            return False
        keep = max(0, min(a.opts.num_keep, n_past // 2))
        if self.add_bos and keep == 0 and s.tokens and s.tokens[0] == L.llama_vocab_bos(self.vocab):
            keep = 1
        discard = (n_past - keep) // 2
        if discard <= 0:
            return False
        if not L.llama_memory_seq_rm(self.mem, s.id, keep, keep + discard):
            return False
        L.llama_memory_seq_add(self.mem, s.id, keep + discard, n_past, -discard)
        del s.tokens[keep : keep + discard]
        return True

    def step(self) -> list[Event]:
        self._place_waiting()
        events: list[Event] = []
        batch = self.batch
        b_token, b_pos, b_seq, b_nseq, b_logits = batch.token, batch.pos, batch.seq_id, batch.n_seq_id, batch.logits
        outputs: list[tuple[Active, int]] = []
        fed: list[tuple[Active, int]] = []  # (request, number of tokens added this step)
        n = 0
        t0 = _now()
        for s in self.slots:
            a = s.active
            if a is None or a.pending is None:
                continue
            if len(s.tokens) >= self.n_ctx_slot and not self._shift(a):
                events.append(self._finish(a, "length"))
                continue
            b_token[n] = a.pending
            b_pos[n] = len(s.tokens)
            b_seq[n][0] = s.id
            b_nseq[n] = 1
            b_logits[n] = 1
            outputs.append((a, n))
            fed.append((a, 1))
            n += 1
        budget = self.n_batch - n
        for a in self.prefill_order:
            if budget <= 0:
                break
            s = a.slot
            start = a.n_done
            take = min(budget, len(a.prompt) - start)
            if take <= 0:
                continue
            sid = s.id
            toks = a.prompt
            for j in range(take):
                b_token[n] = toks[start + j]
                b_pos[n] = start + j
                b_seq[n][0] = sid
                b_nseq[n] = 1
                b_logits[n] = 0
                n += 1
            if not a.t_prompt:
                a.t_prompt = t0
            if start + take == len(toks):
                b_logits[n - 1] = 1
                outputs.append((a, n - 1))
            fed.append((a, take))
            budget -= take
        if n == 0:
            return events
        batch.n_tokens = n
        rc = L.llama_decode(self.ctx, batch)
        t1 = _now()
        if rc != 0:
            for a, _ in fed:
                s = a.slot
                L.llama_memory_seq_rm(self.mem, s.id, -1, -1)
                s.tokens.clear()
                events.append(self._fail(a, f"llama_decode failed with status {rc}"))
            return events
        for a, k in fed:
            s = a.slot
            if a.pending is not None:
                s.tokens.append(a.pending)
                a.pending = None
            else:
                s.tokens.extend(a.prompt[a.n_done : a.n_done + k])
                a.n_done += k
        is_eog = L.llama_vocab_is_eog
        pieces = self._pieces
        for a, i in outputs:
            if a.n_done == len(a.prompt) and a in self.prefill_order:
                self.prefill_order.remove(a)
                a.t_gen = t1
            if a.limit == 0:  # num_predict 0: evaluate the prompt (cache it), generate nothing
                events.append(self._finish(a, "length"))
                continue
            tok = a.sampler.sample(self.ctx, i, a.grammar, self._constrained() if a.grammar else None)
            a.t_last = t1
            if is_eog(self.vocab, tok):
                events.append(self._finish(a, "stop"))
                continue
            a.generated.append(tok)
            if a.top >= 0:
                a.lps.append(token_logprob(logits_row(self.ctx, i, self.n_vocab), tok, a.top, self._piece))
            data = pieces.get(tok)
            if data is None:
                data = pieces[tok] = self.piece(tok)
            text = a.stream.feed(data)
            if a.stream.stopped:
                events.append(self._finish(a, "stop", text))
            elif 0 < a.limit <= len(a.generated) or (
                len(a.slot.tokens) >= self.n_ctx_slot and (a.limit == -2 or not self.can_shift)
            ):
                events.append(self._finish(a, "length", text))
            else:
                a.pending = tok
                if text:
                    events.append((a.rid, text, None, self._take_lps(a)))
        return events

    def _piece(self, tok: int) -> bytes:
        data = self._pieces.get(tok)
        if data is None:
            data = self._pieces[tok] = self.piece(tok)
        return data

    @staticmethod
    def _take_lps(a: Active) -> list[dict] | None:
        if not a.lps:
            return None
        lps, a.lps = a.lps, []
        return lps

    def _constrained(self) -> ConstrainedSampler:
        if self._csampler is None:
            self._csampler = ConstrainedSampler(self.n_vocab)
        return self._csampler

    def _stats(self, a: Active) -> dict:
        t_gen = a.t_gen or a.t_last
        return {
            "prompt_eval_count": a.prompt_eval_count,
            "prompt_eval_duration": max(0, t_gen - a.t_prompt) if a.t_prompt else 0,
            "eval_count": len(a.generated),
            "eval_duration": max(0, a.t_last - t_gen) if t_gen else 0,
            "prompt_tokens": len(a.prompt),
            "cached_tokens": a.cached,
            "truncated": a.truncated,
        }

    def _finish(self, a: Active, reason: str, text: str = "") -> Event:
        text += a.stream.finish()
        final = {"done_reason": reason, "stats": self._stats(a), "context": a.prompt + a.generated}
        self._release(a)
        return (a.rid, text, final, self._take_lps(a))

    def _fail(self, a: Active, message: str) -> Event:
        self._release(a)
        return (a.rid, "", {"error": message}, None)

    # --- embeddings --------------------------------------------------------------------------

    def _embedding_context(self) -> Any:
        if self._embed_ctx is None:
            cp = L.llama_context_default_params()
            chunk = min(self.spec.num_ctx, 128)
            cp.n_ctx = self.spec.num_ctx
            cp.n_seq_max = 1
            cp.n_batch = chunk
            cp.n_ubatch = chunk
            cp.n_threads = self.spec.num_threads
            cp.n_threads_batch = self.spec.num_threads
            cp.embeddings = True
            cp.pooling_type = L.LLAMA_POOLING_TYPE_NONE  # pooled by us: mean over all tokens
            cp.no_perf = True
            ctx = L.llama_init_from_model(self.model, cp)
            if not ctx:
                raise InvalidRequest(f"failed to create an embedding context{_log_hint()}")
            self._embed_ctx = ctx
        return self._embed_ctx

    def embed(self, texts: list[str], truncate: bool) -> dict:
        ctx = self._embedding_context()
        n_ctx = min(self.spec.num_ctx, L.llama_n_ctx(ctx))  # llama.cpp pads n_ctx up
        inputs = []
        for text in texts:
            toks = self.tokenize(text, add_special=True, parse_special=True)
            if len(toks) > n_ctx:
                if not truncate:
                    raise InputTooLong("input length exceeds the context length")
                toks = toks[:n_ctx]
            if not toks:
                raise InvalidRequest("cannot embed an empty input")
            inputs.append(toks)
        t0 = _now()
        mem = L.llama_get_memory(ctx)
        pooled = L.llama_pooling_type(ctx) != L.LLAMA_POOLING_TYPE_NONE
        n_batch = L.llama_n_batch(ctx)
        out = []
        total = 0
        for toks in inputs:
            L.llama_memory_clear(mem, True)
            acc = np.zeros(self.n_embd, dtype=np.float64)
            step = len(toks) if pooled else n_batch
            for start in range(0, len(toks), step):
                part = toks[start : start + step]
                batch = L.llama_batch_init(len(part), 0, 1)
                try:
                    for j, t in enumerate(part):
                        batch.token[j] = t
                        batch.pos[j] = start + j
                        batch.seq_id[j][0] = 0
                        batch.n_seq_id[j] = 1
                        batch.logits[j] = 1
                    batch.n_tokens = len(part)
                    rc = L.llama_decode(ctx, batch)
                    if rc != 0:
                        raise InvalidRequest(f"embedding failed: llama_decode returned {rc}")
                    if pooled:
                        ptr = L.llama_get_embeddings_seq(ctx, 0)
                        acc += np.ctypeslib.as_array(ptr, shape=(self.n_embd,))
                    else:
                        ptr = L.llama_get_embeddings(ctx)
                        acc += np.ctypeslib.as_array(ptr, shape=(len(part), self.n_embd)).sum(axis=0)
                finally:
                    L.llama_batch_free(batch)
            if not pooled:
                acc /= len(toks)
            norm = float(np.linalg.norm(acc))
            vec = acc / norm if norm > 0 else acc
            out.append(vec.astype(np.float32).tolist())
            total += len(toks)
        L.llama_memory_clear(mem, True)
        return {"embeddings": out, "prompt_eval_count": total, "prompt_eval_duration": _now() - t0}

    def close(self) -> None:
        for s in self.slots:
            if s.active:
                self._release(s.active)
        if self._embed_ctx is not None and self._embed_ctx is not self.ctx:
            L.llama_free(self._embed_ctx)
        self._embed_ctx = None
        if self.ctx:
            L.llama_batch_free(self.batch)
            L.llama_free(self.ctx)
            self.ctx = None
        for a in self.adapters:
            L.llama_adapter_lora_free(a)
        self.adapters = []
        if self.model:
            L.llama_model_free(self.model)
            self.model = None
