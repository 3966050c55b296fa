"""Falcon: the 7B layout (parallel attention, multi-query) and the newer decoder layout (grouped KV)."""

from __future__ import annotations

import gguf
import numpy as np
from gguf import MODEL_TENSOR as T

from talesmith.runtime.errors import ConversionError

from .base import Architecture, TensorPlan, register, tensor_name


def grouped_qkv_to_blocks(w: np.ndarray, n_head: int, n_kv: int) -> np.ndarray:
    """Reorder Falcon's fused QKV rows from per-KV-group [q.., k, v] to llama.cpp's [all q, all k, all v].

    The same formula covers multi-query (one group), the newer grouped layout, and one group per head.
    """
    head_dim = w.shape[0] // (n_head + 2 * n_kv)
    groups = w.reshape(n_kv, n_head // n_kv + 2, head_dim, *w.shape[1:])
    q = groups[:, :-2].reshape(n_head * head_dim, *w.shape[1:])
    k = groups[:, -2].reshape(n_kv * head_dim, *w.shape[1:])
    v = groups[:, -1].reshape(n_kv * head_dim, *w.shape[1:])
    return np.ascontiguousarray(np.concatenate([q, k, v]))


@register
class Falcon(Architecture):
    family = "falcon"
    hf_names = ("FalconForCausalLM", "RWForCausalLM")
    gguf_arch = "falcon"
    embeddings = "transformer.word_embeddings.weight"

    def check(self) -> None:
        if self.config.get("alibi"):
            raise ConversionError("Falcon with ALiBi positions is not supported by llama.cpp's Falcon graph")
        if self.config.get("bias"):
            raise ConversionError("Falcon with linear-layer biases is not supported by llama.cpp's Falcon graph")
        if not self.config.get("parallel_attn", True) and not self.config.get("new_decoder_architecture"):
            raise ConversionError("Falcon without parallel attention is not supported by llama.cpp's Falcon graph")

    @property
    def new_layout(self) -> bool:
        return bool(self.config.get("new_decoder_architecture"))

    def _heads(self) -> tuple[int, int]:
        n_head = self.cfg("num_attention_heads", "n_head")
        if self.new_layout:
            return n_head, self.cfg("num_kv_heads", "n_head_kv", default=n_head)
        return n_head, 1 if self.config.get("multi_query", True) else n_head

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        n_head, n_kv = self._heads()
        hidden = self.cfg("hidden_size", "n_embed")
        w.add_context_length(self.cfg("max_position_embeddings", default=2048))
        w.add_embedding_length(hidden)
        w.add_feed_forward_length(self.cfg("ffn_hidden_size", default=4 * hidden))
        w.add_block_count(self.cfg("num_hidden_layers", "n_layer"))
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_rope_freq_base(float(self.cfg("rope_theta", default=10000.0)))
        w.add_layer_norm_eps(float(self.cfg("layer_norm_epsilon", default=1e-5)))
        w.add_tensor_data_layout("jploski")  # the fused QKV rows as grouped_qkv_to_blocks orders them

    def tensors(self) -> list[TensorPlan]:
        n_head, n_kv = self._heads()
        plans = [
            self.copy(tensor_name(T.TOKEN_EMBD), self.embeddings),
            *self.weight_and_bias(T.OUTPUT_NORM, None, "transformer.ln_f"),
            *self.untied_output(),
        ]
        for i in range(self.cfg("num_hidden_layers", "n_layer")):
            h = f"transformer.h.{i}"
            norms = (
                ((T.ATTN_NORM, "ln_attn"), (T.ATTN_NORM_2, "ln_mlp"))
                if self.new_layout and self.has(f"{h}.ln_attn.weight")
                else ((T.ATTN_NORM, "input_layernorm"),)
            )
            for ours, theirs in norms:
                plans += self.weight_and_bias(ours, i, f"{h}.{theirs}")
            plans += [
                self.copy(
                    tensor_name(T.ATTN_QKV, i),
                    f"{h}.self_attention.query_key_value.weight",
                    lambda a: grouped_qkv_to_blocks(a, n_head, n_kv),
                ),
                self.copy(tensor_name(T.ATTN_OUT, i), f"{h}.self_attention.dense.weight"),
                self.copy(tensor_name(T.FFN_UP, i), f"{h}.mlp.dense_h_to_4h.weight"),
                self.copy(tensor_name(T.FFN_DOWN, i), f"{h}.mlp.dense_4h_to_h.weight"),
            ]
        return plans
