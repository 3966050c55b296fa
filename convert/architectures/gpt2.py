"""GPT-2 and distilgpt2. Conv1D layers store their weights fan-in first: transposed on the way out."""

from __future__ import annotations

import gguf
from gguf import MODEL_TENSOR as T

from .base import Architecture, TensorPlan, register, tensor_name


@register
class GPT2(Architecture):
    family = "gpt2"
    hf_names = ("GPT2LMHeadModel",)
    gguf_arch = "gpt2"

    def n_vocab(self) -> int:
        return self.ckpt.shape(self.name("transformer.wte.weight"))[0]

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        n_embd = self.cfg("n_embd")
        w.add_context_length(self.cfg("n_positions", "n_ctx"))
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(self.cfg("n_inner", default=4 * n_embd))
        w.add_block_count(self.cfg("n_layer"))
        w.add_head_count(self.cfg("n_head"))
        w.add_layer_norm_eps(float(self.cfg("layer_norm_epsilon", default=1e-5)))

    def tensors(self) -> list[TensorPlan]:
        plans = [
            self.copy(tensor_name(T.TOKEN_EMBD), "transformer.wte.weight"),
            self.copy(tensor_name(T.POS_EMBD), "transformer.wpe.weight"),
            self.copy(tensor_name(T.OUTPUT_NORM), "transformer.ln_f.weight"),
            self.copy(tensor_name(T.OUTPUT_NORM, suffix="bias"), "transformer.ln_f.bias"),
        ]
        if "lm_head.weight" in self.ckpt:
            plans.append(self.copy(tensor_name(T.OUTPUT), "lm_head.weight"))
        for i in range(self.cfg("n_layer")):
            h = f"transformer.h.{i}"
            plans += [
                self.copy(tensor_name(T.ATTN_NORM, i), f"{h}.ln_1.weight"),
                self.copy(tensor_name(T.ATTN_NORM, i, "bias"), f"{h}.ln_1.bias"),
                self.transposed(tensor_name(T.ATTN_QKV, i), f"{h}.attn.c_attn.weight"),
                self.copy(tensor_name(T.ATTN_QKV, i, "bias"), f"{h}.attn.c_attn.bias"),
                self.transposed(tensor_name(T.ATTN_OUT, i), f"{h}.attn.c_proj.weight"),
                self.copy(tensor_name(T.ATTN_OUT, i, "bias"), f"{h}.attn.c_proj.bias"),
                self.copy(tensor_name(T.FFN_NORM, i), f"{h}.ln_2.weight"),
                self.copy(tensor_name(T.FFN_NORM, i, "bias"), f"{h}.ln_2.bias"),
                self.transposed(tensor_name(T.FFN_UP, i), f"{h}.mlp.c_fc.weight"),
                self.copy(tensor_name(T.FFN_UP, i, "bias"), f"{h}.mlp.c_fc.bias"),
                self.transposed(tensor_name(T.FFN_DOWN, i), f"{h}.mlp.c_proj.weight"),
                self.copy(tensor_name(T.FFN_DOWN, i, "bias"), f"{h}.mlp.c_proj.bias"),
            ]
        return plans
