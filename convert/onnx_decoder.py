"""The decoder graph, layer by layer, from an architecture's Spec and weights (convert/onnx_archs.py).

I/O (what talesmith.runtime.engine.ort_session binds by name): `input_ids [B, S]`, `attention_mask [B, T]`,
`position_ids [B, S]`, `past_key_values.{i}.key|value [B, kv_heads, L, head_dim]`; outputs `logits
[B, 1, vocab]` (float32, the last position only) and `present.{i}.key|value`, of the past's shape.

Attention is ONNX Runtime's GroupQueryAttention (com.microsoft): grouped heads without K/V repetition,
and a KV cache that is one preallocated buffer of L positions per row, written in place when `present`
is bound to the `past` buffer. Each row keeps its tokens at positions 0.. of its own buffer
(right-aligned padding): row b holds `sum(attention_mask[b])` tokens after this step, the new ones
written at its end; T is the longest row. It applies the rotary embeddings too (partial when rotary_dim <
head_dim), at each row's own positions; `position_ids` feed learned position tables (GPT-2), and rotary
dims it cannot take. RMSNorm is ONNX Runtime's SimplifiedLayerNormalization; in sequential blocks each
residual sum and the norm after it are one Skip(Simplified)LayerNormalization, which gives both. Q, K and V
are one packed projection.
fp32 and fp16 outputs compute in their own type (fp16 keeps its KV cache in fp16); int8 and int4 keep
float32 activations with MatMulNBits weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .onnx_archs import Reader, Spec
from .onnx_graph import Graph, embedding, linear

MS = "com.microsoft"
ROPE_POSITIONS = 8192
"""Rows of the rotary tables at least (the trained context when longer): the positions a context can reach."""


@dataclass(frozen=True)
class Rope:
    cos: str
    """[positions, rotary_dim / 2], GroupQueryAttention's cos_cache; it rotates by each row's own positions."""
    sin: str
    by_position: tuple[str, str] | None = None
    """For rotary dims GroupQueryAttention cannot take (half of it not a multiple of 8): cos and sin at
    `position_ids`, [B, S, 1, rotary_dim], applied to the queries and keys before it."""


@dataclass(frozen=True)
class Layers:
    """What every layer's ops share: the graph, the weights, the types, the rotary tables and GroupQueryAttention's
    lengths."""

    g: Graph
    reader: Reader
    quant: str
    dtype: Any
    rope: Rope | None
    seqlens_k: str
    """[B] int32: each row's tokens after this step, minus one."""
    total: str
    """int32 scalar: the longest row's tokens after this step."""


def _types(quant: str):
    from onnx import TensorProto

    if quant == "fp16":
        return np.float16, TensorProto.FLOAT16
    return np.float32, TensorProto.FLOAT


def build_decoder(g: Graph, reader: Reader, *, quant: str, on_layer=lambda i, n: None) -> None:
    from onnx import TensorProto

    spec = reader.spec
    dtype, elem = _types(quant)
    ids = g.input("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"])
    mask = g.input("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"])
    positions = g.input("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"])
    past_shape = ["batch_size", spec.n_kv, "past_sequence_length", spec.head_dim]
    pasts = [
        (
            g.input(f"past_key_values.{i}.key", elem, past_shape),
            g.input(f"past_key_values.{i}.value", elem, past_shape),
        )
        for i in range(spec.n_layer)
    ]

    x = embedding(g, ids, reader.embeddings(), quant=quant, dtype=dtype)
    pos_table = reader.positions()
    if pos_table is not None:
        x = g.op("Add", x, g.op("Gather", g.table("embed_positions", pos_table, dtype), positions))
    del pos_table
    trained = reader.config.get("max_position_embeddings") or reader.config.get("n_positions") or 0
    rope = _rope(g, spec, max(int(trained), ROPE_POSITIONS), dtype, positions) if spec.rotary_dim else None
    layers = Layers(g, reader, quant, dtype, rope, *_lengths(g, mask))
    stream = Residual(x)
    for i in range(spec.n_layer):
        stream = _layer(layers, i, stream, pasts[i])
        on_layer(i + 1, spec.n_layer)
    w, b = reader.final_norm()
    x = _add_norm(g, spec, stream, w, b, dtype=dtype)[0]
    x = g.op("Slice", x, g.ints([-1]), g.ints([2**62]), g.ints([1]))  # the last position: all that is sampled
    w, b = reader.lm_head()
    n_vocab = int(w.shape[0])
    if dtype == np.float32:  # no Cast: ONNX Runtime would copy the logits once more (1 MB a row at 256k tokens)
        linear(g, x, w, b, name="lm_head", quant=quant, out="logits")
    else:
        g.op("Cast", linear(g, x, w, b, name="lm_head", quant=quant), out="logits", to=TensorProto.FLOAT)
    del w, b
    g.output("logits", TensorProto.FLOAT, ["batch_size", 1, n_vocab])
    for i in range(spec.n_layer):
        for kv in ("key", "value"):
            g.output(f"present.{i}.{kv}", elem, ["batch_size", spec.n_kv, "past_sequence_length", spec.head_dim])


def _rope(g: Graph, spec: Spec, rows: int, dtype, positions: str) -> Rope:
    rot = spec.rotary_dim
    inv_freq = 1.0 / (spec.rope_theta ** (np.arange(0, rot, 2, dtype=np.int64).astype(np.float32) / rot))
    freqs = np.outer(np.arange(rows, dtype=np.float32), inv_freq)
    cos, sin = g.tensor("rotary_cos", np.cos(freqs).astype(dtype)), g.tensor("rotary_sin", np.sin(freqs).astype(dtype))
    if (rot // 2) % 8 == 0:
        return Rope(cos, sin)
    at = [
        g.op("Unsqueeze", g.op("Concat", *[g.op("Gather", t, positions)] * 2, axis=-1), g.ints([2])) for t in (cos, sin)
    ]
    return Rope(cos, sin, (at[0], at[1]))


def _rotate(g: Graph, x: str, heads: int, rope: Rope, spec: Spec) -> str:
    """Rotary embeddings on the halves of the first rotary_dim dims of each head ([B, S, heads * head_dim])."""
    assert rope.by_position is not None
    cos, sin = rope.by_position
    rot, hd = spec.rotary_dim, spec.head_dim
    x = g.op("Reshape", x, g.ints([0, 0, heads, hd]))
    rest = None
    if rot < hd:
        x, rest = g.op("Split", x, g.ints([rot, hd - rot]), axis=-1, outputs=2)
    x1, x2 = g.op("Split", x, g.ints([rot // 2, rot // 2]), axis=-1, outputs=2)
    y = g.op("Add", g.op("Mul", x, cos), g.op("Mul", g.op("Concat", g.op("Neg", x2), x1, axis=-1), sin))
    return g.op("Reshape", g.op("Concat", y, rest, axis=-1) if rest else y, g.ints([0, 0, -1]))


def _lengths(g: Graph, mask: str) -> tuple[str, str]:
    """GroupQueryAttention's lengths from the attention mask: each row's count of ones, and the mask's width."""
    from onnx import TensorProto

    counts = g.op("ReduceSum", mask, g.ints([1]), keepdims=0)
    seqlens = g.op("Cast", g.op("Sub", counts, g.const(1, np.int64)), to=TensorProto.INT32)
    total = g.op("Cast", g.op("Squeeze", g.op("Shape", mask, start=1, end=2), g.ints([0])), to=TensorProto.INT32)
    return seqlens, total


@dataclass(frozen=True)
class Residual:
    """The residual stream between layers: `x`, plus `pending` where the last sum is still to be made (by the
    norm that follows it)."""

    x: str
    pending: str | None = None


def _norm(g: Graph, spec: Spec, x: str, w: np.ndarray, b: np.ndarray | None, *, dtype) -> str:
    return _add_norm(g, spec, Residual(x), w, b, dtype=dtype)[0]


def _add_norm(g: Graph, spec: Spec, stream: Residual, w: np.ndarray, b: np.ndarray | None, *, dtype) -> tuple[str, str]:
    """(the norm of the stream's sum, the sum): a pending addition is made inside ONNX Runtime's fused
    SkipLayerNormalization / SkipSimplifiedLayerNormalization, which also gives the sum."""
    scale = g.const(np.asarray(w, np.float32).astype(dtype), dtype)
    if spec.norm == "layer":
        bias = g.const(np.zeros(w.shape, dtype) if b is None else np.asarray(b, np.float32).astype(dtype), dtype)
        if stream.pending is None:
            return g.op("LayerNormalization", stream.x, scale, bias, axis=-1, epsilon=spec.eps), stream.x
        outs = g.op(
            "SkipLayerNormalization", stream.x, stream.pending, scale, bias, outputs=4, domain=MS, epsilon=spec.eps
        )
        return outs[0], outs[3]
    # RMSNorm, in float32 as transformers computes it (ONNX Runtime's fused kernels)
    if stream.pending is None:
        return g.op("SimplifiedLayerNormalization", stream.x, scale, axis=-1, epsilon=spec.eps, stash_type=1), stream.x
    outs = g.op(
        "SkipSimplifiedLayerNormalization", stream.x, stream.pending, scale, outputs=4, domain=MS, epsilon=spec.eps
    )
    return outs[0], outs[3]


def _attention(c: Layers, i: int, x: str, past: tuple[str, str]) -> str:
    from onnx import helper

    g, reader, quant, rope, s = c.g, c.reader, c.quant, c.rope, c.reader.spec
    p = f"layers.{i}.attn"
    parts = reader.qkv(i)  # one projection for the three: GroupQueryAttention takes them packed
    weight = np.concatenate([w for w, _ in parts], axis=0)
    bias = None
    if any(b is not None for _, b in parts):
        bias = np.concatenate([b if b is not None else np.zeros(w.shape[0], np.float32) for w, b in parts])
    del parts
    qkv = linear(g, x, weight, bias, name=p + ".qkv", quant=quant)
    del weight, bias
    inputs = [qkv, "", ""]
    if rope and rope.by_position:
        sizes = [s.n_head * s.head_dim, s.n_kv * s.head_dim, s.n_kv * s.head_dim]
        q, k, v = g.op("Split", qkv, g.ints(sizes), axis=-1, outputs=3)
        inputs = [_rotate(g, q, s.n_head, rope, s), _rotate(g, k, s.n_kv, rope, s), v]
    tables = (rope.cos, rope.sin) if rope is not None and rope.by_position is None else ()
    rotary = {"do_rotary": 1, "rotary_interleaved": 0} if tables else {}
    out = p + ".context"
    g.nodes.append(
        helper.make_node(
            "GroupQueryAttention",
            [*inputs, past[0], past[1], c.seqlens_k, c.total, *tables],
            [out, f"present.{i}.key", f"present.{i}.value"],
            name=p + ".gqa",
            domain=MS,
            num_heads=s.n_head,
            kv_num_heads=s.n_kv,
            scale=1.0 / math.sqrt(s.head_dim),
            **rotary,
        )
    )
    g.counts["GroupQueryAttention"] = g.counts.get("GroupQueryAttention", 0) + 1
    w, b = reader.attn_out(i)
    return linear(g, out, w, b, name=p + ".o", quant=quant)


def _activation(g: Graph, x: str, kind: str) -> str:
    if kind == "gelu_tanh":
        return g.op("Gelu", x, approximate="tanh")
    if kind == "gelu":
        return g.op("Gelu", x)
    if kind == "silu":
        return g.op("Mul", x, g.op("Sigmoid", x))
    return g.op("Relu", x)


def _mlp(c: Layers, i: int, x: str) -> str:
    g, quant, s = c.g, c.quant, c.reader.spec
    loaders = c.reader.mlp(i)
    p = f"layers.{i}.mlp"
    if s.gated:
        w, b = loaders[0]()
        gate = _activation(g, linear(g, x, w, b, name=p + ".gate", quant=quant), s.activation)
        w, b = loaders[1]()
        h = g.op("Mul", gate, linear(g, x, w, b, name=p + ".up", quant=quant))
    else:
        w, b = loaders[0]()
        h = _activation(g, linear(g, x, w, b, name=p + ".up", quant=quant), s.activation)
    del w, b
    w, b = loaders[-1]()
    return linear(g, h, w, b, name=p + ".down", quant=quant)


def _layer(c: Layers, i: int, stream: Residual, past: tuple[str, str]) -> Residual:
    """One block over the residual stream; the stream after it, its last sum left to the next norm."""
    g, s = c.g, c.reader.spec
    weights = c.reader.norms(i)
    if s.block == "sequential":
        normed, x = _add_norm(g, s, stream, *weights[0], dtype=c.dtype)
        normed, h = _add_norm(g, s, Residual(x, _attention(c, i, normed, past)), *weights[1], dtype=c.dtype)
        return Residual(h, _mlp(c, i, normed))
    first, x = _add_norm(g, s, stream, *weights[0], dtype=c.dtype)
    norms = [first, *(_norm(g, s, x, w, b, dtype=c.dtype) for w, b in weights[1:])]
    attn = _attention(c, i, norms[0], past)
    mlp = _mlp(c, i, norms[-1])
    return Residual(g.op("Add", x, attn), mlp)
