"""Pure conversion helpers, checked with exact numbers."""

import numpy as np
import pytest

from talesmith.convert.architectures.falcon import grouped_qkv_to_blocks
from talesmith.convert.architectures.gptj import rotary_to_neox
from talesmith.convert.architectures.llama import halves_to_pairs
from talesmith.convert.lora import lora_delta, lora_scaling, parse_spec
from talesmith.convert.quantize import parse_quants
from talesmith.runtime.errors import ConversionError


def rows(n):
    return np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 2), dtype=np.float32)


def test_gptj_rotary_rows_become_neox_halves_per_head():
    out = rotary_to_neox(rows(12), n_head=2, rotary_dim=4)  # head_dim 6: 4 rotary, 2 not
    assert out[:, 0].tolist() == [0, 2, 1, 3, 4, 5, 6, 8, 7, 9, 10, 11]


def test_llama_halves_become_interleaved_pairs_per_head():
    out = halves_to_pairs(rows(8), n_head=2)  # head_dim 4: (0, 2) and (1, 3) are the rotated pairs
    assert out[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_falcon_grouped_qkv_becomes_q_then_k_then_v():
    # 4 query heads, 2 KV groups, head_dim 1: per group [q, q, k, v]
    w = np.array(["q0", "q1", "k0", "v0", "q2", "q3", "k1", "v1"], dtype=object)[:, None]
    out = grouped_qkv_to_blocks(w, n_head=4, n_kv=2)
    assert out[:, 0].tolist() == ["q0", "q1", "q2", "q3", "k0", "k1", "v0", "v1"]
    multi_query = np.array(["q0", "q1", "q2", "k", "v"], dtype=object)[:, None]
    assert grouped_qkv_to_blocks(multi_query, n_head=3, n_kv=1)[:, 0].tolist() == ["q0", "q1", "q2", "k", "v"]


def test_lora_delta_and_scaling():
    a = np.array([[1.0, 2.0, 3.0]])  # r=1, in=3
    b = np.array([[1.0], [-1.0]])  # out=2
    assert lora_scaling(16, 4, rslora=False) == 4.0 and lora_scaling(16, 4, rslora=True) == 8.0
    assert lora_delta(a, b, scaling=2.0, fan_in_fan_out=False).tolist() == [[2, 4, 6], [-2, -4, -6]]
    assert lora_delta(a, b, scaling=1.0, fan_in_fan_out=True).tolist() == [[1, -1], [2, -2], [3, -3]]


def test_lora_spec_with_and_without_scale(tmp_path):
    assert parse_spec("adapters/horror") == (parse_spec("adapters/horror")[0], 1.0)
    path, scale = parse_spec("adapters/horror:0.5")
    assert path.name == "horror" and scale == 0.5
    assert parse_spec("C:/x:2")[1] == 2.0


def test_quant_list():
    assert parse_quants("q4_k_m, Q8_0") == ["Q4_K_M", "Q8_0"]
    with pytest.raises(ConversionError, match="unknown quantization type 'Q9_9'"):
        parse_quants("Q9_9")
