"""Llama and Llama 2. llama.cpp rotates interleaved pairs, Hugging Face rotates halves: q and k are permuted."""

from __future__ import annotations

import gguf
import numpy as np
from gguf import MODEL_TENSOR as T

from .base import Architecture, TensorPlan, register, tensor_name


def halves_to_pairs(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q_proj/k_proj rows from rotate-half layout to llama.cpp's interleaved pairs, per head."""
    rows = w.shape[0]
    return np.ascontiguousarray(w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


@register
class Llama(Architecture):
    family = "llama"
    hf_names = ("LlamaForCausalLM",)
    gguf_arch = "llama"
    embeddings = "model.embed_tokens.weight"

    def check(self) -> None:
        from talesmith.runtime.errors import ConversionError

        scaling = self.config.get("rope_scaling")
        if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
            raise ConversionError(f"rope scaling {scaling} is not supported yet; convert a model without it")

    def _heads(self) -> tuple[int, int, int]:
        hidden, n_head = self.cfg("hidden_size"), self.cfg("num_attention_heads")
        return n_head, self.cfg("num_key_value_heads", default=n_head), self.cfg("head_dim", default=hidden // n_head)

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        n_head, n_kv, head_dim = self._heads()
        w.add_context_length(self.cfg("max_position_embeddings"))
        w.add_embedding_length(self.cfg("hidden_size"))
        w.add_feed_forward_length(self.cfg("intermediate_size"))
        w.add_block_count(self.cfg("num_hidden_layers"))
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(float(self.cfg("rope_theta", default=10000.0)))
        w.add_layer_norm_rms_eps(float(self.cfg("rms_norm_eps", default=1e-6)))
        w.add_vocab_size(self.n_vocab())
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)

    def tensors(self) -> list[TensorPlan]:
        n_head, n_kv, _ = self._heads()
        plans = [
            self.copy(tensor_name(T.TOKEN_EMBD), self.embeddings),
            self.copy(tensor_name(T.OUTPUT_NORM), "model.norm.weight"),
            *self.untied_output(),
        ]
        for i in range(self.cfg("num_hidden_layers")):
            h = f"model.layers.{i}"
            plans += [
                self.copy(tensor_name(T.ATTN_NORM, i), f"{h}.input_layernorm.weight"),
                self.copy(
                    tensor_name(T.ATTN_Q, i), f"{h}.self_attn.q_proj.weight", lambda a: halves_to_pairs(a, n_head)
                ),
                self.copy(tensor_name(T.ATTN_K, i), f"{h}.self_attn.k_proj.weight", lambda a: halves_to_pairs(a, n_kv)),
                self.copy(tensor_name(T.ATTN_V, i), f"{h}.self_attn.v_proj.weight"),
                self.copy(tensor_name(T.ATTN_OUT, i), f"{h}.self_attn.o_proj.weight"),
                self.copy(tensor_name(T.FFN_NORM, i), f"{h}.post_attention_layernorm.weight"),
                self.copy(tensor_name(T.FFN_GATE, i), f"{h}.mlp.gate_proj.weight"),
                self.copy(tensor_name(T.FFN_UP, i), f"{h}.mlp.up_proj.weight"),
                self.copy(tensor_name(T.FFN_DOWN, i), f"{h}.mlp.down_proj.weight"),
            ]
        return plans
