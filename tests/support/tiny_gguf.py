"""Writes a tiny random-weight llama-architecture GGUF with the `gguf` package.

F32 tensors and a small SentencePiece vocabulary: llama.cpp loads it in milliseconds, so the
API tests exercise the real runtime without real weights. The output is deterministic for a
given seed, so its digest is stable across runs.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

from gguf import GGUFWriter, TokenType

N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_LAYER = 2
N_CTX = 2048


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    pieces = ["\u2581"] + [c for c in string.ascii_letters + string.digits + string.punctuation]
    pieces += ["\u2581" + c for c in string.ascii_lowercase]
    pieces += ["\u2581the", "\u2581is", "\u2581sky", "\u2581blue", "\u2581hello", "\u2581world"]
    tokens += pieces
    types += [TokenType.NORMAL] * len(pieces)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(pieces))]
    return tokens, scores, [int(t) for t in types]


# For `chain`: after a prompt ending in ">" (e.g. an opened "<think>") or a space, the model
# writes " o</think> o</think> o..." (a reasoning "o", a closing tag it writes itself, an answer).
THINKING_CHAIN = {">": "\u2581", "\u2581": "o", "o": "<", "<": "/", "/": "t", "t": "h", "h": "i", "i": "n", "n": "k",
                  "k": ">"}


def write_tiny_llama(path: str | Path, *, seed: int = 0, name: str = "tiny-llama",
                     chat_template: str | None = None, pooling_type: int | None = None,
                     chain: dict[str, str] | None = None) -> Path:
    """Write the model to `path` and return it (with `tokenizer.chat_template` when given; with
    `pooling_type`, e.g. 1 = mean, it declares itself an embedding model).

    `chain` makes the output deterministic: after the token of a key (one character, or "▁"),
    the model writes the token of its value, with near certainty, whatever came before (the
    layers' outputs are zero, so the next token depends on the last one only), e.g.
    {">": "a", "a": "<", ...} writes a fixed text after a prompt ending in ">"."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD

    w = GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)  # ALL_F32
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    if pooling_type is not None:
        w.add_pooling_type(pooling_type)

    def t(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    embd, output = t(n_vocab, N_EMBD), t(n_vocab, N_EMBD)
    if chain:
        assert len(chain) <= N_EMBD, "one embedding dimension per chained token"
        for dim, (after, then) in enumerate(chain.items()):
            embd[tokens.index(after)] = 0.0
            embd[tokens.index(after), dim] = 1.0  # one-hot: normalised to 8.0 in that dimension
            output[tokens.index(then), dim] = 10.0  # ... gives `then` a logit of 80
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.add_tensor("output.weight", output)
    kv = N_HEAD_KV * head_dim
    for i in range(N_LAYER):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", t(N_EMBD, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_k.weight", t(kv, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_v.weight", t(kv, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_output.weight", np.zeros((N_EMBD, N_EMBD), np.float32) if chain else t(N_EMBD, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", t(N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_up.weight", t(N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_down.weight", np.zeros((N_EMBD, N_FF), np.float32) if chain else t(N_EMBD, N_FF))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
