"""An ONNX graph whose weights stream into one external data file as they are made.

Nothing holds the whole model: each weight is read, converted (float32, float16, or quantized to
MatMulNBits blocks) and written in slices of about CHUNK_BYTES, straight to its place in
`model.onnx_data`; `model.onnx` holds only the graph and the small tensors. Memory therefore stays
near one source tensor plus one slice, whatever the model's size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 21
IR_VERSION = 10
"""The newest IR version the ONNX Runtime we ship reads (onnx itself writes a newer one by default)."""
ALIGN = 4096
INLINE_BYTES = 4096
"""Tensors up to this size stay inside model.onnx."""
CHUNK_BYTES = 64 * 2**20
BLOCK_SIZE = 32
"""Weights per scale in MatMulNBits blocks, unless the quantization names another (int4-b128)."""
ACCURACY_LEVEL = 4
"""MatMulNBits on the CPU: activations quantized to int8 inside the kernel (the fast path)."""
NBITS = {"int4": 4, "int8": 8}
BLOCK_SIZES = (32, 64, 128)


def nbits_format(quant: str) -> tuple[int, int] | None:
    """(bits, block size) of a MatMulNBits quantization: int8, int4 (blocks of BLOCK_SIZE), int4-b64,
    int4-b128 (larger blocks: fewer scales, faster on batched rows, less exact); None for fp32 and fp16."""
    kind, _, block = quant.partition("-b")
    if kind not in NBITS:
        return None
    return NBITS[kind], int(block) if block else BLOCK_SIZE


class DataFile:
    """The external data file: space is reserved per tensor (page-aligned) and filled with pwrite."""

    def __init__(self, path: Path):
        self.path = path
        self.size = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def reserve(self, nbytes: int) -> int:
        offset = -(-self.size // ALIGN) * ALIGN
        self.size = offset + nbytes
        return offset

    def write(self, offset: int, array: np.ndarray) -> None:
        view = np.ascontiguousarray(array).data.cast("B")
        while len(view):
            done = os.pwrite(self._fd, view, offset)
            view, offset = view[done:], offset + done

    def close(self) -> None:
        if self._fd >= 0:
            os.ftruncate(self._fd, self.size)
            os.close(self._fd)
            self._fd = -1


def _rows_per_chunk(row_bytes: int) -> int:
    return max(1, CHUNK_BYTES // max(1, row_bytes))


class Graph:
    """Nodes, inputs, outputs and initializers of one model; weights go to `data` as they are added."""

    def __init__(self, data: DataFile):
        self.data = data
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self.counts: dict[str, int] = {}
        self._consts: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        self._names: set[str] = set()

    # --- nodes ------------------------------------------------------------------------------

    def _fresh(self, base: str) -> str:
        n = self.counts.get("#" + base, 0)
        self.counts["#" + base] = n + 1
        return f"{base}_{n}"

    def op(self, op_type: str, *inputs: str, out: str | None = None, outputs: int = 1, domain: str = "", **attrs: Any):
        """Add a node; returns its output name (or names, with `outputs` > 1)."""
        from onnx import helper

        names = [out] if out else [self._fresh(op_type) for _ in range(outputs)]
        self.nodes.append(
            helper.make_node(op_type, list(inputs), names, name=self._fresh(op_type + "_node"), domain=domain, **attrs)
        )
        self.counts[op_type] = self.counts.get(op_type, 0) + 1
        return names[0] if outputs == 1 else names

    def input(self, name: str, elem_type: int, shape: Sequence[Any]) -> str:
        from onnx import helper

        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def output(self, name: str, elem_type: int, shape: Sequence[Any]) -> None:
        from onnx import helper

        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    # --- tensors ----------------------------------------------------------------------------

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        """A small constant (deduplicated)."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.tobytes(), array.shape)
        if key not in self._consts:
            self._consts[key] = self.tensor(self._fresh("const"), array)
        return self._consts[key]

    def ints(self, values: Sequence[int]) -> str:
        return self.const(list(values), np.int64)

    def tensor(self, name: str, array: np.ndarray) -> str:
        """An initializer holding `array` (inside model.onnx when small, else in the data file)."""
        from onnx import numpy_helper

        if name in self._names:
            raise ValueError(f"initializer {name} written twice")
        self._names.add(name)
        if array.nbytes <= INLINE_BYTES:
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
            return name
        offset = self._external(name, array.dtype, array.shape)
        self.data.write(offset, array)
        return name

    def _external(self, name: str, dtype: Any, shape: Sequence[int]) -> int:
        from onnx import TensorProto, helper

        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        offset = self.data.reserve(nbytes)
        t = TensorProto()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        t.dims.extend(int(d) for d in shape)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.data.path.name), ("offset", str(offset)), ("length", str(nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(t)
        return offset

    def table(self, name: str, array: np.ndarray, dtype: Any) -> str:
        """A [rows, cols] tensor as it is (an embedding table), converted to `dtype` slice by slice."""
        if array.nbytes <= INLINE_BYTES:
            return self.tensor(name, array.astype(dtype))
        self._names.add(name)
        offset = self._external(name, dtype, array.shape)
        row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
        step = _rows_per_chunk(row_bytes)
        for r in range(0, array.shape[0], step):
            self.data.write(offset + r * row_bytes, array[r : r + step].astype(dtype))
        return name

    def transposed(self, name: str, weight: np.ndarray, dtype: Any) -> str:
        """A [N, K] weight stored as [K, N] (MatMul's layout), written slice by slice."""
        n, k = weight.shape
        if weight.nbytes <= INLINE_BYTES:
            return self.tensor(name, np.ascontiguousarray(weight.T.astype(dtype)))
        self._names.add(name)
        offset = self._external(name, dtype, (k, n))
        row_bytes = n * np.dtype(dtype).itemsize
        step = _rows_per_chunk(max(row_bytes, n * 4))
        for c in range(0, k, step):
            self.data.write(offset + c * row_bytes, weight[:, c : c + step].T.astype(dtype))
        return name

    def nbits(self, name: str, weight: np.ndarray, bits: int, block: int, *, rows: bool = False) -> tuple[str, str]:
        """A [N, K] weight quantized to MatMulNBits blocks (symmetric, `block` weights along K): (packed, scales).
        With `rows`, the packed tensor is shaped [N, K * bits / 8] (GatherBlockQuantized's layout)."""
        from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

        quantize = quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits
        n, k = weight.shape
        k_blocks = -(-k // block)
        blob = block * bits // 8
        per_byte = 8 // bits
        packed_name, scales_name = name + f"_Q{bits}", name + "_scales"
        self._names.update((packed_name, scales_name))
        packed_at = self._external(packed_name, np.uint8, (n, k_blocks * blob) if rows else (n, k_blocks, blob))
        scales_at = self._external(scales_name, np.float32, (n, k_blocks))
        step = _rows_per_chunk(k_blocks * block * 4)
        for r in range(0, n, step):
            chunk = weight[r : r + step]
            m = chunk.shape[0]
            fp32 = np.zeros((k_blocks * block, m), np.float32)
            fp32[:k] = chunk.T
            packed = np.zeros((m, k_blocks, blob), np.uint8)
            scales = np.zeros((m, k_blocks), np.float32)
            zero_points = np.zeros((m, -(-k_blocks // per_byte)), np.uint8)
            quantize(packed, fp32, scales, zero_points, block, m, k, True)
            self.data.write(packed_at + r * k_blocks * blob, packed)
            self.data.write(scales_at + r * k_blocks * 4, scales)
        return packed_name, scales_name

    # --- the model --------------------------------------------------------------------------

    def model(self, *, producer: str = "talesmith"):
        from onnx import helper

        graph = helper.make_graph(self.nodes, "talesmith", self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph,
            producer_name=producer,
            ir_version=IR_VERSION,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        )
        return model


def embedding(g: Graph, ids: str, table: np.ndarray, *, quant: str, dtype) -> str:
    """Rows of an embedding table: 4-bit blocks (GatherBlockQuantized) for int4, else a table in `dtype`."""
    from onnx import helper

    nbits = nbits_format(quant)
    if nbits is not None and nbits[0] == 4 and table.shape[1] % nbits[1] == 0:
        packed, scales = g.nbits("embed_tokens", table, *nbits, rows=True)
        return g.op(
            "GatherBlockQuantized",
            packed,
            ids,
            scales,
            domain="com.microsoft",
            gather_axis=0,
            quantize_axis=1,
            block_size=nbits[1],
            bits=4,
        )
    stored = np.float32 if quant == "fp32" else np.float16
    x = g.op("Gather", g.table("embed_tokens", table, stored), ids)
    return x if stored == dtype else g.op("Cast", x, to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


def linear(
    g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, *, name: str, quant: str, out: str | None = None
) -> str:
    """x @ weight.T (+ bias), weight given as [out, in]; stored as `quant` (fp32, fp16, int8, int4); its result
    named `out` where given (a graph output)."""
    n, k = weight.shape
    nbits = nbits_format(quant)
    last = out if bias is None else None
    if nbits is not None:
        packed, scales = g.nbits(name, weight, *nbits)
        y = g.op(
            "MatMulNBits",
            x,
            packed,
            scales,
            out=last,
            domain="com.microsoft",
            K=k,
            N=n,
            bits=nbits[0],
            block_size=nbits[1],
            accuracy_level=ACCURACY_LEVEL,
        )
        bias_dtype: type[np.floating[Any]] = np.float32
    else:
        dtype = np.float16 if quant == "fp16" else np.float32
        y = g.op("MatMul", x, g.transposed(name, weight, dtype), out=last)
        bias_dtype = dtype
    if bias is not None:
        y = g.op("Add", y, g.tensor(name + ".bias", np.asarray(bias, dtype=bias_dtype)), out=out)
    return y
