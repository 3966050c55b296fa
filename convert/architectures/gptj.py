"""GPT-J as llama.cpp's `phi2` graph, which has the same block (see rotary_to_neox for the one twist)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Architecture, TensorPlan, register


def rotary_to_neox(w: np.ndarray, n_head: int, rotary_dim: int) -> np.ndarray:
    """Reorder the rows of q_proj/k_proj from GPT-J's interleaved rotary pairs to NeoX's halves.

    Within each head, the first `rotary_dim` rows become: even rows, then odd rows; the rest stay.
    """
    head_dim = w.shape[0] // n_head
    order = np.concatenate([np.arange(0, rotary_dim, 2), np.arange(1, rotary_dim, 2), np.arange(rotary_dim, head_dim)])
    rows = (np.arange(n_head)[:, None] * head_dim + order[None, :]).reshape(-1)
    return np.ascontiguousarray(w[rows])


@register
class GPTJ(Architecture):
    hf_names = ("GPTJForCausalLM",)
    gguf_arch = "phi2"

    def n_vocab(self) -> int:
        return self.ckpt.shape(self.name("transformer.wte.weight"))[0]

    def hparams(self) -> dict[str, Any]:
        n_embd, n_head = self.cfg("n_embd"), self.cfg("n_head")
        return {
            "context_length": self.cfg("n_positions", "n_ctx"),
            "embedding_length": n_embd,
            "feed_forward_length": self.cfg("n_inner", default=4 * n_embd),
            "block_count": self.cfg("n_layer"),
            "attention.head_count": n_head,
            "attention.head_count_kv": n_head,
            "rope.dimension_count": self.cfg("rotary_dim", default=n_embd // n_head),
            "attention.layer_norm_epsilon": float(self.cfg("layer_norm_epsilon", default=1e-5)),
        }

    def tensors(self) -> list[TensorPlan]:
        n_embd, n_head = self.cfg("n_embd"), self.cfg("n_head")
        rotary = self.cfg("rotary_dim", default=n_embd // n_head)

        def neox(a: np.ndarray) -> np.ndarray:
            return rotary_to_neox(a, n_head, rotary)

        plans = [
            self.copy("token_embd.weight", "transformer.wte.weight"),
            self.copy("output_norm.weight", "transformer.ln_f.weight"),
            self.copy("output_norm.bias", "transformer.ln_f.bias"),
            self.copy("output.weight", "lm_head.weight"),
            self.copy("output.bias", "lm_head.bias"),
        ]
        for i in range(self.cfg("n_layer")):
            h, b = f"transformer.h.{i}", f"blk.{i}"
            plans += [
                self.copy(f"{b}.attn_norm.weight", f"{h}.ln_1.weight"),
                self.copy(f"{b}.attn_norm.bias", f"{h}.ln_1.bias"),
                self.copy(f"{b}.attn_q.weight", f"{h}.attn.q_proj.weight", neox),
                self.copy(f"{b}.attn_k.weight", f"{h}.attn.k_proj.weight", neox),
                self.copy(f"{b}.attn_v.weight", f"{h}.attn.v_proj.weight"),
                self.copy(f"{b}.attn_output.weight", f"{h}.attn.out_proj.weight"),
                # phi2 requires an output-projection bias; GPT-J has none.
                TensorPlan(f"{b}.attn_output.bias", (n_embd,), lambda: np.zeros(n_embd, dtype=np.float32)),
                self.copy(f"{b}.ffn_up.weight", f"{h}.mlp.fc_in.weight"),
                self.copy(f"{b}.ffn_up.bias", f"{h}.mlp.fc_in.bias"),
                self.copy(f"{b}.ffn_down.weight", f"{h}.mlp.fc_out.weight"),
                self.copy(f"{b}.ffn_down.bias", f"{h}.mlp.fc_out.bias"),
            ]
        return plans
