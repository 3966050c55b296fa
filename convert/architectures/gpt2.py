"""GPT-2 and distilgpt2. Conv1D layers store their weights fan-in first: transposed on the way out."""

from __future__ import annotations

from typing import Any

from .base import Architecture, TensorPlan, register


@register
class GPT2(Architecture):
    hf_names = ("GPT2LMHeadModel",)
    gguf_arch = "gpt2"

    def n_vocab(self) -> int:
        return self.ckpt.shape(self.name("transformer.wte.weight"))[0]

    def hparams(self) -> dict[str, Any]:
        n_embd = self.cfg("n_embd")
        return {
            "context_length": self.cfg("n_positions", "n_ctx"),
            "embedding_length": n_embd,
            "feed_forward_length": self.cfg("n_inner", default=4 * n_embd),
            "block_count": self.cfg("n_layer"),
            "attention.head_count": self.cfg("n_head"),
            "attention.layer_norm_epsilon": float(self.cfg("layer_norm_epsilon", default=1e-5)),
        }

    def tensors(self) -> list[TensorPlan]:
        plans = [
            self.copy("token_embd.weight", "transformer.wte.weight"),
            self.copy("position_embd.weight", "transformer.wpe.weight"),
            self.copy("output_norm.weight", "transformer.ln_f.weight"),
            self.copy("output_norm.bias", "transformer.ln_f.bias"),
        ]
        if "lm_head.weight" in self.ckpt:
            plans.append(self.copy("output.weight", "lm_head.weight"))
        for i in range(self.cfg("n_layer")):
            h, b = f"transformer.h.{i}", f"blk.{i}"
            plans += [
                self.copy(f"{b}.attn_norm.weight", f"{h}.ln_1.weight"),
                self.copy(f"{b}.attn_norm.bias", f"{h}.ln_1.bias"),
                self.transposed(f"{b}.attn_qkv.weight", f"{h}.attn.c_attn.weight"),
                self.copy(f"{b}.attn_qkv.bias", f"{h}.attn.c_attn.bias"),
                self.transposed(f"{b}.attn_output.weight", f"{h}.attn.c_proj.weight"),
                self.copy(f"{b}.attn_output.bias", f"{h}.attn.c_proj.bias"),
                self.copy(f"{b}.ffn_norm.weight", f"{h}.ln_2.weight"),
                self.copy(f"{b}.ffn_norm.bias", f"{h}.ln_2.bias"),
                self.transposed(f"{b}.ffn_up.weight", f"{h}.mlp.c_fc.weight"),
                self.copy(f"{b}.ffn_up.bias", f"{h}.mlp.c_fc.bias"),
                self.transposed(f"{b}.ffn_down.weight", f"{h}.mlp.c_proj.weight"),
                self.copy(f"{b}.ffn_down.bias", f"{h}.mlp.c_proj.bias"),
            ]
        return plans
