"""One ONNX Runtime session over N rows of one preallocated KV cache (the graph of convert/onnx_decoder.py).

Each layer's keys and values live in one buffer of shape [rows, kv_heads, positions + 1, head_dim],
allocated once. Every run binds the buffer (or the part of it that holds the rows in play) as both
`past_key_values.*` and `present.*` through I/O binding, so GroupQueryAttention writes the new keys
and values in place after each row's own tokens: nothing is copied per step, and a row is cut back
(a banned phrase rewound, a prompt that shares only a prefix) by lowering its length alone.

A run covers a range of rows. `decode` gives one token more to each of several rows; `prefill` evaluates
one row's tokens alone (exactly the numbers the same prompt gets alone); `prefill_rows` evaluates the first
tokens of several empty rows in one run, right-padded to the longest (a row differs from the same tokens
alone only by the rounding of the batched products). Rows outside the run keep what they hold; a row
inside the range but not evaluating, and the padding after a shorter row's tokens, write scratch
positions just past the row's own tokens (the extra position at the end makes room for a full row's
single token), which its next real tokens overwrite: the attention mask never shows a row anything past
its own length.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from talesmith.runtime.errors import ContextOverflowError, ModelError

MODEL_FILE = "model.onnx"


def session_options(threads: int | None, *, spin: bool = True) -> Any:
    """`threads` intra-op threads (None: every core); with `spin`, idle threads wait for the next step spinning
    for a while (ONNX Runtime's default) rather than asleep: faster on cores nothing else uses, much slower where
    other work needs them. (A bounded `session.intra_op.spin_duration_us` of 1 ms was slower than the default.)"""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return options


def open_session(folder: Path, *, device: str, threads: int | None, spin: bool = True) -> Any:
    """An InferenceSession over the folder's model.onnx, on `device` (never a silent CPU fallback)."""
    import onnxruntime as ort

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    if device == "cuda":
        ort.set_default_logger_severity(4)  # a missing CUDA library is reported below, in one line
    try:
        session = ort.InferenceSession(
            str(folder / MODEL_FILE), session_options(threads, spin=spin), providers=providers
        )
    except Exception as e:
        raise ModelError(
            f"ONNX Runtime could not load {folder / MODEL_FILE}: {str(e).splitlines()[0]}; the "
            f"file may be truncated, convert it again"
        ) from None
    finally:
        ort.set_default_logger_severity(2)
    if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise ModelError(
            "--device cuda was asked for but ONNX Runtime fell back to the CPU (its CUDA "
            "libraries or the GPU are missing); use --device cpu, or install the CUDA and cuDNN versions "
            "this onnxruntime-gpu was built for"
        )
    return session


class RowCache:
    """A session and its KV buffer for `rows` sequences of up to `positions` tokens each."""

    def __init__(
        self,
        folder: Path,
        *,
        rows: int,
        positions: int,
        device: str,
        threads: int | None,
        spin: bool = True,
        session=None,
    ):
        self.folder = folder
        if session is None:
            session = open_session(folder, device=device, threads=threads, spin=spin)
        self.session = session
        self.device = device
        self.providers = tuple(self.session.get_providers())
        self._read_io()
        self.rows = rows
        self.positions = positions
        self.lengths = [0] * rows
        """Tokens in each row's cache."""
        shape = (rows, self.kv_heads, positions + 1, self.head_dim)
        self._row_bytes = int(np.prod(shape[1:])) * np.dtype(self.kv_dtype).itemsize
        self._buffers = [self._allocate(shape) for _ in self.past_names]
        self.logits = np.zeros((rows, 1, self.n_vocab), dtype=np.float32)
        """Each row's logits from its own last evaluation."""
        self._scratch = np.zeros_like(self.logits) if rows > 1 else self.logits
        """A run's logits when rows between those in play would overwrite logits still to be sampled."""
        self._ones = np.ones(rows * (positions + 1), dtype=np.int64)
        """The attention mask of rows that all hold the same number of tokens: a view of its start."""
        self._binding = self.session.io_binding()
        self._bound: tuple[int, int, int] | None = None
        """The rows (first, count) and logits array whose buffers the binding holds."""

    def _read_io(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._input_names = set(inputs)
        self.past_names = sorted(
            (n for n in inputs if n.startswith("past_key_values.")),
            key=lambda n: (int(n.split(".")[1]), n.split(".")[2]),
        )
        nodes = {o.name: o for o in self.session.get_outputs()}
        logits = nodes.get("logits")
        if not self.past_names or "input_ids" not in inputs or logits is None or logits.shape[1] != 1:
            raise ModelError(
                f"{self.folder / MODEL_FILE} was not written by this version of `talesmith convert --to onnx` "
                f"(its KV cache is not one shared buffer); convert the model again"
            )
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        first = inputs[self.past_names[0]]
        self.kv_heads, self.head_dim = int(first.shape[1]), int(first.shape[3])
        self.kv_dtype = np.float16 if "float16" in first.type else np.float32
        self.n_vocab = int(logits.shape[-1])

    def _allocate(self, shape: tuple[int, ...]) -> Any:
        if self.device == "cpu":
            return np.zeros(shape, dtype=self.kv_dtype)
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), self.kv_dtype, "cuda", 0)

    def _pointer(self, buffer: Any, row: int) -> int:
        base = buffer.ctypes.data if isinstance(buffer, np.ndarray) else buffer.data_ptr()
        return int(base) + row * self._row_bytes

    def _run(
        self, first: int, tokens: np.ndarray, lengths: Sequence[int], positions: np.ndarray, logits: np.ndarray
    ) -> None:
        """Evaluate `tokens` [B, S] at `positions` for rows first..first+B-1, which hold `lengths` tokens."""
        count, width = tokens.shape
        longest = max(lengths) + width
        if min(lengths) + width == longest:  # one row, or rows of one length: all ones
            mask = self._ones[: count * longest].reshape(count, longest)
        else:
            totals = np.asarray(lengths, dtype=np.int64) + width
            mask = (np.arange(longest)[None, :] < totals[:, None]).astype(np.int64)
        binding = self._binding
        if self._bound != (first, count, id(logits)):  # the same rows as the last run keep their buffers bound
            shape = [count, self.kv_heads, self.positions + 1, self.head_dim]
            for past, present, buffer in zip(self.past_names, self.present_names, self._buffers, strict=True):
                pointer = self._pointer(buffer, first)
                binding.bind_input(past, self.device, 0, self.kv_dtype, shape, pointer)
                binding.bind_output(present, self.device, 0, self.kv_dtype, shape, pointer)
            out = logits[first : first + count]
            binding.bind_output("logits", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
            self._bound = (first, count, id(logits))
        binding.bind_cpu_input("input_ids", tokens)
        binding.bind_cpu_input("attention_mask", mask)
        if "position_ids" in self._input_names:
            binding.bind_cpu_input("position_ids", positions)
        self.session.run_with_iobinding(binding)

    def prefill(self, row: int, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate `tokens` after the row's cached ones; the logits of the last, as float32 [vocab]."""
        start = self.lengths[row]
        if start + len(tokens) > self.positions:
            raise ContextOverflowError(
                f"{start + len(tokens)} tokens do not fit the context of {self.positions}; raise --ctx or "
                f"shorten the prompt"
            )
        positions = np.arange(start, start + len(tokens), dtype=np.int64)[None, :]
        self._run(row, np.asarray([tokens], dtype=np.int64), [start], positions, self.logits)
        self.lengths[row] = start + len(tokens)
        return self.logits[row, 0]

    def prefill_rows(self, tokens: dict[int, Sequence[int]]) -> list[int]:
        """Evaluate the first tokens of several empty rows (row: tokens) in one run, right-padded to the longest
        list; the rows whose logits are now in `logits`: those whose list is the longest (a shorter row's last
        position is padding). Every row from the first listed to the last must be empty: ONNX Runtime's
        GroupQueryAttention evaluates more than one token of several rows in one run only as their first."""
        first, last = min(tokens), max(tokens)
        if any(self.lengths[first : last + 1]):
            raise ValueError(f"rows {first}..{last} are not all empty: evaluate their tokens row by row")
        width = max(len(t) for t in tokens.values())
        if width > self.positions:
            raise ContextOverflowError(
                f"{width} tokens do not fit the context of {self.positions}; raise --ctx or shorten the prompt"
            )
        ids = np.zeros((last - first + 1, width), dtype=np.int64)
        for row, row_tokens in tokens.items():
            ids[row - first, : len(row_tokens)] = row_tokens
        positions = np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape)
        full = [row for row, row_tokens in tokens.items() if len(row_tokens) == width]
        out = self.logits if len(full) == len(ids) else self._scratch
        self._run(first, ids, [0] * len(ids), np.ascontiguousarray(positions), out)
        for row, row_tokens in tokens.items():
            self.lengths[row] = len(row_tokens)
        if out is not self.logits:
            self.logits[full] = out[full]
        return full

    def decode(self, tokens: dict[int, int]) -> None:
        """One token more for each row in `tokens` (row: token), all in one run; their logits are in `logits`."""
        first, last = min(tokens), max(tokens)
        ids = np.zeros((last - first + 1, 1), dtype=np.int64)
        positions = np.zeros((last - first + 1, 1), dtype=np.int64)
        lengths = self.lengths[first : last + 1]  # a row not decoding writes a scratch token past its end
        for row, token in tokens.items():
            if self.lengths[row] >= self.positions:
                raise ContextOverflowError(f"the context of {self.positions} tokens is full; raise --ctx")
            ids[row - first, 0], positions[row - first, 0] = token, self.lengths[row]
        every = len(tokens) == last - first + 1  # then the run writes each row's logits in place
        out = self.logits if every else self._scratch
        self._run(first, ids, lengths, positions, out)
        for row in tokens:
            self.lengths[row] += 1
            if out is not self.logits:
                self.logits[row] = out[row]

    @property
    def can_copy(self) -> bool:
        """Whether `copy` is available (the cache is in host memory)."""
        return self.device == "cpu"

    def copy(self, source: int, target: int, n: int) -> None:
        """Make row `target` hold the first `n` tokens of row `source` (a prompt shared by several sequences)."""
        for buffer in self._buffers:
            buffer[target, :, :n] = buffer[source, :, :n]
        self.lengths[target] = n

    def truncate(self, row: int, n: int) -> None:
        """Keep the row's first `n` tokens."""
        self.lengths[row] = min(self.lengths[row], n)

    def close(self) -> None:
        self._buffers = []
        self.session = None
