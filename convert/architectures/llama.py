"""Llama and Llama 2. llama.cpp rotates interleaved pairs, Hugging Face rotates halves: q and k are permuted."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Architecture, TensorPlan, register


def halves_to_pairs(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q_proj/k_proj rows from rotate-half layout to llama.cpp's interleaved pairs, per head."""
    rows = w.shape[0]
    return np.ascontiguousarray(w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


@register
class Llama(Architecture):
    hf_names = ("LlamaForCausalLM",)
    gguf_arch = "llama"

    def check(self) -> None:
        from talesmith.runtime.errors import ConversionError

        scaling = self.config.get("rope_scaling")
        if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
            raise ConversionError(f"rope scaling {scaling} is not supported yet; convert a model without it")

    def n_vocab(self) -> int:
        return self.ckpt.shape(self.name("model.embed_tokens.weight"))[0]

    def _heads(self) -> tuple[int, int, int]:
        hidden, n_head = self.cfg("hidden_size"), self.cfg("num_attention_heads")
        return n_head, self.cfg("num_key_value_heads", default=n_head), self.cfg("head_dim", default=hidden // n_head)

    def hparams(self) -> dict[str, Any]:
        n_head, n_kv, head_dim = self._heads()
        params = {
            "context_length": self.cfg("max_position_embeddings"),
            "embedding_length": self.cfg("hidden_size"),
            "feed_forward_length": self.cfg("intermediate_size"),
            "block_count": self.cfg("num_hidden_layers"),
            "attention.head_count": n_head,
            "attention.head_count_kv": n_kv,
            "rope.dimension_count": head_dim,
            "rope.freq_base": float(self.cfg("rope_theta", default=10000.0)),
            "attention.layer_norm_rms_epsilon": float(self.cfg("rms_norm_eps", default=1e-6)),
            "vocab_size": self.n_vocab(),
        }
        params["attention.key_length"] = params["attention.value_length"] = head_dim
        return params

    def tensors(self) -> list[TensorPlan]:
        n_head, n_kv, _ = self._heads()
        plans = [
            self.copy("token_embd.weight", "model.embed_tokens.weight"),
            self.copy("output_norm.weight", "model.norm.weight"),
        ]
        if "lm_head.weight" in self.ckpt:
            plans.append(self.copy("output.weight", "lm_head.weight"))
        for i in range(self.cfg("num_hidden_layers")):
            h, b = f"model.layers.{i}", f"blk.{i}"
            plans += [
                self.copy(f"{b}.attn_norm.weight", f"{h}.input_layernorm.weight"),
                self.copy(f"{b}.attn_q.weight", f"{h}.self_attn.q_proj.weight", lambda a: halves_to_pairs(a, n_head)),
                self.copy(f"{b}.attn_k.weight", f"{h}.self_attn.k_proj.weight", lambda a: halves_to_pairs(a, n_kv)),
                self.copy(f"{b}.attn_v.weight", f"{h}.self_attn.v_proj.weight"),
                self.copy(f"{b}.attn_output.weight", f"{h}.self_attn.o_proj.weight"),
                self.copy(f"{b}.ffn_norm.weight", f"{h}.post_attention_layernorm.weight"),
                self.copy(f"{b}.ffn_gate.weight", f"{h}.mlp.gate_proj.weight"),
                self.copy(f"{b}.ffn_up.weight", f"{h}.mlp.up_proj.weight"),
                self.copy(f"{b}.ffn_down.weight", f"{h}.mlp.down_proj.weight"),
            ]
        return plans
