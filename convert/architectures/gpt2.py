"""GPT-2 and distilgpt2. Conv1D layers store their weights fan-in first: transposed on the way out."""

from __future__ import annotations

import gguf
from gguf import MODEL_TENSOR as T

from .base import Architecture, TensorPlan, register, tensor_name

LAYER = (
    (T.ATTN_NORM, "ln_1", False),
    (T.ATTN_QKV, "attn.c_attn", True),
    (T.ATTN_OUT, "attn.c_proj", True),
    (T.FFN_NORM, "ln_2", False),
    (T.FFN_UP, "mlp.c_fc", True),
    (T.FFN_DOWN, "mlp.c_proj", True),
)
"""Each block's weight and bias pairs: GGUF kind, module under `transformer.h.{i}`, whether it is a Conv1D."""


def add_gpt2_hparams(arch: Architecture, w: gguf.GGUFWriter, *, rotary_dim: int | None = None) -> None:
    """The hyper-parameters under GPT-2's config.json names (n_embd, n_head, n_positions, ...), which GPT-J's
    config keeps; `rotary_dim` (GPT-J) adds its KV heads (one per head) and its rotary dims."""
    n_embd = arch.cfg("n_embd")
    w.add_context_length(arch.cfg("n_positions", "n_ctx"))
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(arch.cfg("n_inner", default=4 * n_embd))
    w.add_block_count(arch.cfg("n_layer"))
    n_head = arch.cfg("n_head")
    w.add_head_count(n_head)
    if rotary_dim is not None:
        w.add_head_count_kv(n_head)
        w.add_rope_dimension_count(rotary_dim)
    w.add_layer_norm_eps(float(arch.cfg("layer_norm_epsilon", default=1e-5)))


@register
class GPT2(Architecture):
    family = "gpt2"
    hf_names = ("GPT2LMHeadModel",)
    gguf_arch = "gpt2"
    embeddings = "transformer.wte.weight"

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        add_gpt2_hparams(self, w)

    def tensors(self) -> list[TensorPlan]:
        plans = [
            self.copy(tensor_name(T.TOKEN_EMBD), self.embeddings),
            self.copy(tensor_name(T.POS_EMBD), "transformer.wpe.weight"),
            *self.weight_and_bias(T.OUTPUT_NORM, None, "transformer.ln_f"),
            *self.untied_output(),
        ]
        for i in range(self.cfg("n_layer")):
            for kind, module, conv1d in LAYER:
                plans += self.weight_and_bias(kind, i, f"transformer.h.{i}.{module}", conv1d=conv1d)
        return plans
