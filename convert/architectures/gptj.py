"""GPT-J as llama.cpp's `phi2` graph, which has the same block (see rotary_to_neox for the one twist)."""

from __future__ import annotations

import gguf
import numpy as np
from gguf import MODEL_TENSOR as T

from .base import Architecture, TensorPlan, register, tensor_name


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
    family = "gptj"
    hf_names = ("GPTJForCausalLM",)
    gguf_arch = "phi2"

    def n_vocab(self) -> int:
        return self.ckpt.shape(self.name("transformer.wte.weight"))[0]

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        n_embd, n_head = self.cfg("n_embd"), self.cfg("n_head")
        w.add_context_length(self.cfg("n_positions", "n_ctx"))
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(self.cfg("n_inner", default=4 * n_embd))
        w.add_block_count(self.cfg("n_layer"))
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head)
        w.add_rope_dimension_count(self.cfg("rotary_dim", default=n_embd // n_head))
        w.add_layer_norm_eps(float(self.cfg("layer_norm_epsilon", default=1e-5)))

    def tensors(self) -> list[TensorPlan]:
        n_embd, n_head = self.cfg("n_embd"), self.cfg("n_head")
        rotary = self.cfg("rotary_dim", default=n_embd // n_head)

        def neox(a: np.ndarray) -> np.ndarray:
            return rotary_to_neox(a, n_head, rotary)

        plans = [
            self.copy(tensor_name(T.TOKEN_EMBD), "transformer.wte.weight"),
            self.copy(tensor_name(T.OUTPUT_NORM), "transformer.ln_f.weight"),
            self.copy(tensor_name(T.OUTPUT_NORM, suffix="bias"), "transformer.ln_f.bias"),
            self.copy(tensor_name(T.OUTPUT), "lm_head.weight"),
            self.copy(tensor_name(T.OUTPUT, suffix="bias"), "lm_head.bias"),
        ]
        for i in range(self.cfg("n_layer")):
            h = f"transformer.h.{i}"
            plans += [
                self.copy(tensor_name(T.ATTN_NORM, i), f"{h}.ln_1.weight"),
                self.copy(tensor_name(T.ATTN_NORM, i, "bias"), f"{h}.ln_1.bias"),
                self.copy(tensor_name(T.ATTN_Q, i), f"{h}.attn.q_proj.weight", neox),
                self.copy(tensor_name(T.ATTN_K, i), f"{h}.attn.k_proj.weight", neox),
                self.copy(tensor_name(T.ATTN_V, i), f"{h}.attn.v_proj.weight"),
                self.copy(tensor_name(T.ATTN_OUT, i), f"{h}.attn.out_proj.weight"),
                # phi2 requires an output-projection bias; GPT-J has none.
                TensorPlan(tensor_name(T.ATTN_OUT, i, "bias"), (n_embd,), lambda: np.zeros(n_embd, dtype=np.float32)),
                self.copy(tensor_name(T.FFN_UP, i), f"{h}.mlp.fc_in.weight"),
                self.copy(tensor_name(T.FFN_UP, i, "bias"), f"{h}.mlp.fc_in.bias"),
                self.copy(tensor_name(T.FFN_DOWN, i), f"{h}.mlp.fc_out.weight"),
                self.copy(tensor_name(T.FFN_DOWN, i, "bias"), f"{h}.mlp.fc_out.bias"),
            ]
        return plans
