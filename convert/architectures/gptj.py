"""GPT-J as llama.cpp's `phi2` graph, which has the same block (see rotary_to_neox for the one twist)."""

from __future__ import annotations

import gguf
import numpy as np
from gguf import MODEL_TENSOR as T

from .base import Architecture, TensorPlan, register, tensor_name
from .gpt2 import add_gpt2_hparams


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
    embeddings = "transformer.wte.weight"

    def _rotary_dim(self) -> int:
        return self.cfg("rotary_dim", default=self.cfg("n_embd") // self.cfg("n_head"))

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        add_gpt2_hparams(self, w, rotary_dim=self._rotary_dim())

    def tensors(self) -> list[TensorPlan]:
        n_embd, n_head, rotary = self.cfg("n_embd"), self.cfg("n_head"), self._rotary_dim()

        def neox(a: np.ndarray) -> np.ndarray:
            return rotary_to_neox(a, n_head, rotary)

        plans = [
            self.copy(tensor_name(T.TOKEN_EMBD), self.embeddings),
            *self.weight_and_bias(T.OUTPUT_NORM, None, "transformer.ln_f"),
            *self.weight_and_bias(T.OUTPUT, None, "lm_head"),
        ]
        for i in range(self.cfg("n_layer")):
            h = f"transformer.h.{i}"
            plans += [
                *self.weight_and_bias(T.ATTN_NORM, i, f"{h}.ln_1"),
                self.copy(tensor_name(T.ATTN_Q, i), f"{h}.attn.q_proj.weight", neox),
                self.copy(tensor_name(T.ATTN_K, i), f"{h}.attn.k_proj.weight", neox),
                self.copy(tensor_name(T.ATTN_V, i), f"{h}.attn.v_proj.weight"),
                self.copy(tensor_name(T.ATTN_OUT, i), f"{h}.attn.out_proj.weight"),
                # phi2 requires an output-projection bias; GPT-J has none.
                TensorPlan(tensor_name(T.ATTN_OUT, i, "bias"), (n_embd,), lambda: np.zeros(n_embd, dtype=np.float32)),
                *self.weight_and_bias(T.FFN_UP, i, f"{h}.mlp.fc_in"),
                *self.weight_and_bias(T.FFN_DOWN, i, f"{h}.mlp.fc_out"),
            ]
        return plans
