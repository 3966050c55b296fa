"""The decoder graph, layer by layer, from an architecture's Spec and weights (convert/onnx_archs.py).

I/O (what talesmith.runtime.engine.ort binds by name): `input_ids`, `attention_mask [B, past+S]`,
`position_ids`, `past_key_values.{i}.key|value [B, kv_heads, past, head_dim]`; outputs `logits`
(float32) and `present.{i}.key|value`. Attention is written in plain ONNX ops: grouped heads as a
[B, kv, group, S, head_dim] view (no K/V repetition), rotary embeddings on rotated halves (partial
when rotary_dim < head_dim), a causal and padding mask, softmax in the compute type.
fp32 and fp16 outputs compute in their own type (fp16 keeps its KV cache in fp16); int8 and int4 keep
float32 activations with MatMulNBits weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .onnx_archs import Reader, Spec
from .onnx_graph import Graph, embedding, linear


@dataclass(frozen=True)
class Rope:
    cos4: str
    sin4: str
    cos5: str
    sin5: str


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
    rope = _rope(g, spec, positions, elem) if spec.rotary_dim else None
    allowed = _allowed(g, ids, mask)
    for i in range(spec.n_layer):
        x = _layer(g, reader, i, x, quant=quant, dtype=dtype, rope=rope, allowed=allowed, past=pasts[i])
        on_layer(i + 1, spec.n_layer)
    w, b = reader.final_norm()
    x = _norm(g, spec, x, w, b, dtype=dtype)
    w, b = reader.lm_head()
    n_vocab = int(w.shape[0])
    logits = linear(g, x, w, b, name="lm_head", quant=quant)
    del w, b
    g.op("Cast", logits, out="logits", to=TensorProto.FLOAT)
    g.output("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", n_vocab])
    for i in range(spec.n_layer):
        for kv in ("key", "value"):
            g.output(f"present.{i}.{kv}", elem, ["batch_size", spec.n_kv, "total_sequence_length", spec.head_dim])


def _rope(g: Graph, spec: Spec, positions: str, elem: int) -> Rope:
    from onnx import TensorProto

    rot = spec.rotary_dim
    inv_freq = 1.0 / (spec.rope_theta ** (np.arange(0, rot, 2, dtype=np.int64).astype(np.float32) / rot))
    pos = g.op("Unsqueeze", g.op("Cast", positions, to=TensorProto.FLOAT), g.ints([-1]))
    freqs = g.op("Mul", pos, g.const(inv_freq.astype(np.float32)))
    emb = g.op("Concat", freqs, freqs, axis=-1)
    cos, sin = g.op("Cos", emb), g.op("Sin", emb)
    if elem != TensorProto.FLOAT:
        cos, sin = g.op("Cast", cos, to=elem), g.op("Cast", sin, to=elem)
    cos4, sin4 = g.op("Unsqueeze", cos, g.ints([1])), g.op("Unsqueeze", sin, g.ints([1]))
    return Rope(cos4, sin4, g.op("Unsqueeze", cos4, g.ints([1])), g.op("Unsqueeze", sin4, g.ints([1])))


def _allowed(g: Graph, ids: str, mask: str) -> str:
    """Which keys each query may see: [B, 1, 1, S, T] booleans (causal, and not padding)."""
    from onnx import TensorProto

    total = g.op("Squeeze", g.op("Shape", mask, start=1, end=2), g.ints([0]))
    length = g.op("Squeeze", g.op("Shape", ids, start=1, end=2), g.ints([0]))
    past = g.op("Sub", total, length)
    one, zero = g.const(1, np.int64), g.const(0, np.int64)
    keys = g.op("Range", zero, total, one)
    queries = g.op("Unsqueeze", g.op("Range", past, total, one), g.ints([-1]))
    causal = g.op("LessOrEqual", keys, queries)
    padding = g.op("Unsqueeze", g.op("Cast", mask, to=TensorProto.BOOL), g.ints([1, 2, 3]))
    return g.op("And", causal, padding)


def _norm(g: Graph, spec: Spec, x: str, w: np.ndarray, b: np.ndarray | None, *, dtype) -> str:
    scale = g.const(np.asarray(w, np.float32).astype(dtype), dtype)
    if spec.norm == "layer":
        bias = g.const(np.zeros(w.shape, dtype) if b is None else np.asarray(b, np.float32).astype(dtype), dtype)
        return g.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=spec.eps)
    # RMSNorm, in float32 as transformers computes it
    from onnx import TensorProto

    x32 = x if dtype == np.float32 else g.op("Cast", x, to=TensorProto.FLOAT)
    var = g.op("ReduceMean", g.op("Mul", x32, x32), g.ints([-1]), keepdims=1)
    inv = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.const(spec.eps))))
    y = g.op("Mul", x32, inv)
    if dtype != np.float32:
        y = g.op("Cast", y, to=TensorProto.FLOAT16)
    return g.op("Mul", y, scale)


def _rotate(g: Graph, x: str, cos: str, sin: str, spec: Spec) -> str:
    rot, hd = spec.rotary_dim, spec.head_dim
    rest = None
    if rot < hd:
        x, rest = g.op("Split", x, g.ints([rot, hd - rot]), axis=-1, outputs=2)
    x1, x2 = g.op("Split", x, g.ints([rot // 2, rot // 2]), axis=-1, outputs=2)
    rotated = g.op("Concat", g.op("Neg", x2), x1, axis=-1)
    y = g.op("Add", g.op("Mul", x, cos), g.op("Mul", rotated, sin))
    return g.op("Concat", y, rest, axis=-1) if rest else y


def _attention(
    g: Graph,
    reader: Reader,
    i: int,
    x: str,
    *,
    quant: str,
    dtype,
    rope: Rope | None,
    allowed: str,
    past: tuple[str, str],
) -> str:
    s = reader.spec
    group = s.n_head // s.n_kv
    (wq, bq), (wk, bk), (wv, bv) = reader.qkv(i)
    p = f"layers.{i}.attn"
    q = linear(g, x, wq, bq, name=p + ".q", quant=quant)
    k = linear(g, x, wk, bk, name=p + ".k", quant=quant)
    v = linear(g, x, wv, bv, name=p + ".v", quant=quant)
    del wq, wk, wv, bq, bk, bv
    q = g.op("Transpose", g.op("Reshape", q, g.ints([0, 0, s.n_kv, group, s.head_dim])), perm=[0, 2, 3, 1, 4])
    k = g.op("Transpose", g.op("Reshape", k, g.ints([0, 0, s.n_kv, s.head_dim])), perm=[0, 2, 1, 3])
    v = g.op("Transpose", g.op("Reshape", v, g.ints([0, 0, s.n_kv, s.head_dim])), perm=[0, 2, 1, 3])
    if rope:
        q = _rotate(g, q, rope.cos5, rope.sin5, s)
        k = _rotate(g, k, rope.cos4, rope.sin4, s)
    k = g.op("Concat", past[0], k, axis=2, out=f"present.{i}.key")
    v = g.op("Concat", past[1], v, axis=2, out=f"present.{i}.value")
    kt = g.op("Transpose", g.op("Unsqueeze", k, g.ints([2])), perm=[0, 1, 2, 4, 3])
    scores = g.op("Mul", g.op("MatMul", q, kt), g.const(1.0 / math.sqrt(s.head_dim), dtype))
    scores = g.op("Where", allowed, scores, g.const(np.finfo(dtype).min, dtype))
    probs = g.op("Softmax", scores, axis=-1)
    out = g.op("MatMul", probs, g.op("Unsqueeze", v, g.ints([2])))
    out = g.op("Reshape", g.op("Transpose", out, perm=[0, 3, 1, 2, 4]), g.ints([0, 0, s.n_head * s.head_dim]))
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


def _mlp(g: Graph, reader: Reader, i: int, x: str, *, quant: str) -> str:
    s = reader.spec
    loaders = reader.mlp(i)
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


def _layer(
    g: Graph,
    reader: Reader,
    i: int,
    x: str,
    *,
    quant: str,
    dtype,
    rope: Rope | None,
    allowed: str,
    past: tuple[str, str],
) -> str:
    s = reader.spec
    weights = reader.norms(i)
    if s.block == "sequential":
        h = g.op(
            "Add",
            x,
            _attention(
                g,
                reader,
                i,
                _norm(g, s, x, *weights[0], dtype=dtype),
                quant=quant,
                dtype=dtype,
                rope=rope,
                allowed=allowed,
                past=past,
            ),
        )
        return g.op("Add", h, _mlp(g, reader, i, _norm(g, s, h, *weights[1], dtype=dtype), quant=quant))
    norms = [_norm(g, s, x, w, b, dtype=dtype) for w, b in weights]
    attn = _attention(g, reader, i, norms[0], quant=quant, dtype=dtype, rope=rope, allowed=allowed, past=past)
    mlp = _mlp(g, reader, i, norms[-1], quant=quant)
    return g.op("Add", g.op("Add", x, attn), mlp)
