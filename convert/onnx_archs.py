"""What the ONNX graph builder needs from each architecture: its shape (a Spec) and its weights, one layer
at a time, as [out, in] arrays read from the checkpoint (adapters merged) only when asked for.

Every projection is handed over split and in Hugging Face's linear layout: GPT-2's Conv1D weights are
transposed, fused QKV tensors (GPT-2 `c_attn`, Falcon `query_key_value`) are split into q, k and v,
and GPT-J's q/k rows are reordered from interleaved rotary pairs to rotated halves (the order the graph
rotates in; q·k is unchanged since both move alike).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from talesmith.runtime.errors import ConversionError

from . import registry
from .architectures.falcon import grouped_qkv_to_blocks
from .architectures.gptj import rotary_to_neox
from .hfconfig import HFConfig

Linear = tuple[np.ndarray, "np.ndarray | None"]
ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
}


@dataclass(frozen=True)
class Spec:
    n_layer: int
    hidden: int
    n_head: int
    n_kv: int
    head_dim: int
    rotary_dim: int
    """0: learned absolute positions (GPT-2) instead of rotary embeddings."""
    rope_theta: float
    norm: str
    """"layer" (LayerNorm with bias) or "rms" (RMSNorm)."""
    eps: float
    activation: str
    block: str
    """"sequential" (attention, then MLP), "parallel" (one norm feeds both) or "parallel2" (a norm each)."""
    gated: bool
    """SwiGLU MLP (gate, up, down) rather than up, activation, down."""


class Reader(HFConfig):
    """One architecture's weights: subclasses name the tensors and shape them."""

    family: ClassVar[str] = ""
    """Its name in the one registry of GGUF and ONNX converters (`talesmith.convert.registry`)."""
    model_types: ClassVar[tuple[str, ...]] = ()

    def __init__(self, weights):
        self.weights = weights
        self.ckpt = weights.ckpt
        self.config: dict[str, Any] = self.ckpt.config
        self.spec = self.read_spec()

    def activation(self, *keys: str, default: str) -> str:
        name = str(self.cfg(*keys, default=default))
        if name not in ACTIVATIONS:
            raise ConversionError(f"activation {name!r} is not supported for ONNX; supported: {', '.join(ACTIVATIONS)}")
        return ACTIVATIONS[name]

    def name(self, hf_name: str) -> str | None:
        for candidate in (hf_name, hf_name.removeprefix("transformer."), "transformer." + hf_name):
            if candidate in self.ckpt:
                return candidate
        return None

    def has(self, hf_name: str) -> bool:
        return self.name(hf_name) is not None

    def get(self, hf_name: str) -> np.ndarray:
        found = self.name(hf_name)
        if found is None:
            raise ConversionError(f"{self.ckpt.folder} has no tensor {hf_name!r}; is it a complete checkpoint?")
        return self.weights.get(found)

    def maybe(self, hf_name: str) -> np.ndarray | None:
        return self.get(hf_name) if self.has(hf_name) else None

    def linear(self, prefix: str) -> Linear:
        return self.get(prefix + ".weight"), self.maybe(prefix + ".bias")

    def norm(self, prefix: str) -> Linear:
        return self.get(prefix + ".weight"), self.maybe(prefix + ".bias")

    # --- what the graph asks for ---------------------------------------------------------------

    def read_spec(self) -> Spec:
        raise NotImplementedError

    def embeddings(self) -> np.ndarray:
        raise NotImplementedError

    def positions(self) -> np.ndarray | None:
        return None

    def norms(self, i: int) -> list[Linear]:
        """The block's norms: one (parallel), two (sequential: before attention, before MLP; parallel2)."""
        raise NotImplementedError

    def qkv(self, i: int) -> tuple[Linear, Linear, Linear]:
        raise NotImplementedError

    def attn_out(self, i: int) -> Linear:
        raise NotImplementedError

    def mlp(self, i: int) -> list[Callable[[], Linear]]:
        """Loaders of (gate,) up and down, in that order: each read only when the graph writes it."""
        raise NotImplementedError

    def final_norm(self) -> Linear:
        raise NotImplementedError

    def lm_head(self) -> Linear:
        raise NotImplementedError


register = registry.register_onnx


def reader_for(weights) -> Reader:
    model_type = str(weights.ckpt.config.get("model_type", ""))
    cls = registry.onnx_reader(model_type)
    if cls is None:
        raise ConversionError(
            f"{weights.ckpt.folder}: ONNX conversion supports GPT-2, GPT-J, Llama and Falcon, "
            f"not {model_type or 'a model without model_type'!r}"
        )
    return cls(weights)


def _split_rows(w: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(w, np.cumsum(sizes)[:-1], axis=0)


def _split_bias(b: np.ndarray | None, sizes: list[int]) -> Sequence[np.ndarray | None]:
    return [None] * len(sizes) if b is None else _split_rows(b, sizes)


def _gpt2_spec(reader: Reader) -> Spec:
    """The Spec under GPT-2's config.json names (n_embd, n_head, n_layer, ...), which GPT-J's config keeps:
    learned positions, LayerNorm, attention then MLP."""
    hidden, n_head = reader.cfg("n_embd"), reader.cfg("n_head")
    return Spec(
        n_layer=reader.cfg("n_layer"),
        hidden=hidden,
        n_head=n_head,
        n_kv=n_head,
        head_dim=hidden // n_head,
        rotary_dim=0,
        rope_theta=0.0,
        norm="layer",
        eps=float(reader.cfg("layer_norm_epsilon", default=1e-5)),
        activation=reader.activation("activation_function", default="gelu_new"),
        block="sequential",
        gated=False,
    )


@register
class GPT2(Reader):
    family = "gpt2"
    model_types = ("gpt2",)

    def read_spec(self) -> Spec:
        if self.config.get("scale_attn_by_inverse_layer_idx") or self.config.get("scale_attn_weights") is False:
            raise ConversionError("GPT-2 with non-standard attention scaling is not supported for ONNX")
        return _gpt2_spec(self)

    def embeddings(self) -> np.ndarray:
        return self.get("transformer.wte.weight")

    def positions(self) -> np.ndarray:
        return self.get("transformer.wpe.weight")

    def norms(self, i: int) -> list[Linear]:
        return [self.norm(f"transformer.h.{i}.ln_1"), self.norm(f"transformer.h.{i}.ln_2")]

    def _conv(self, prefix: str) -> Linear:  # Conv1D: [in, out]
        return self.get(prefix + ".weight").T, self.maybe(prefix + ".bias")

    def qkv(self, i: int) -> tuple[Linear, Linear, Linear]:
        w, b = self._conv(f"transformer.h.{i}.attn.c_attn")
        ws, bs = _split_rows(w, [self.spec.hidden] * 3), _split_bias(b, [self.spec.hidden] * 3)
        return (ws[0], bs[0]), (ws[1], bs[1]), (ws[2], bs[2])

    def attn_out(self, i: int) -> Linear:
        return self._conv(f"transformer.h.{i}.attn.c_proj")

    def mlp(self, i: int) -> list[Callable[[], Linear]]:
        return [lambda: self._conv(f"transformer.h.{i}.mlp.c_fc"), lambda: self._conv(f"transformer.h.{i}.mlp.c_proj")]

    def final_norm(self) -> Linear:
        return self.norm("transformer.ln_f")

    def lm_head(self) -> Linear:
        return (self.get("lm_head.weight") if self.has("lm_head.weight") else self.embeddings()), None


@register
class GPTJ(Reader):
    family = "gptj"
    model_types = ("gptj",)

    def read_spec(self) -> Spec:
        spec = _gpt2_spec(self)
        rotary_dim = int(self.cfg("rotary_dim", default=spec.head_dim))
        return replace(spec, rotary_dim=rotary_dim, rope_theta=10000.0, block="parallel")

    def embeddings(self) -> np.ndarray:
        return self.get("transformer.wte.weight")

    def norms(self, i: int) -> list[Linear]:
        return [self.norm(f"transformer.h.{i}.ln_1")]

    def qkv(self, i: int) -> tuple[Linear, Linear, Linear]:
        a = f"transformer.h.{i}.attn"
        s = self.spec
        q = rotary_to_neox(self.get(a + ".q_proj.weight"), s.n_head, s.rotary_dim)
        k = rotary_to_neox(self.get(a + ".k_proj.weight"), s.n_head, s.rotary_dim)
        return (q, None), (k, None), (self.get(a + ".v_proj.weight"), None)

    def attn_out(self, i: int) -> Linear:
        return self.linear(f"transformer.h.{i}.attn.out_proj")

    def mlp(self, i: int) -> list[Callable[[], Linear]]:
        return [
            lambda: self.linear(f"transformer.h.{i}.mlp.fc_in"),
            lambda: self.linear(f"transformer.h.{i}.mlp.fc_out"),
        ]

    def final_norm(self) -> Linear:
        return self.norm("transformer.ln_f")

    def lm_head(self) -> Linear:
        return self.linear("lm_head")


@register
class Llama(Reader):
    family = "llama"
    model_types = ("llama",)

    def read_spec(self) -> Spec:
        scaling = self.config.get("rope_scaling")
        if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
            raise ConversionError(f"rope scaling {scaling} is not supported for ONNX yet; convert a model without it")
        hidden, n_head = self.cfg("hidden_size"), self.cfg("num_attention_heads")
        head_dim = int(self.cfg("head_dim", default=hidden // n_head))
        return Spec(
            n_layer=self.cfg("num_hidden_layers"),
            hidden=hidden,
            n_head=n_head,
            n_kv=self.cfg("num_key_value_heads", default=n_head),
            head_dim=head_dim,
            rotary_dim=head_dim,
            rope_theta=float(self.cfg("rope_theta", default=10000.0)),
            norm="rms",
            eps=float(self.cfg("rms_norm_eps", default=1e-6)),
            activation=self.activation("hidden_act", default="silu"),
            block="sequential",
            gated=True,
        )

    def embeddings(self) -> np.ndarray:
        return self.get("model.embed_tokens.weight")

    def norms(self, i: int) -> list[Linear]:
        return [self.norm(f"model.layers.{i}.input_layernorm"), self.norm(f"model.layers.{i}.post_attention_layernorm")]

    def qkv(self, i: int) -> tuple[Linear, Linear, Linear]:
        a = f"model.layers.{i}.self_attn"
        return self.linear(a + ".q_proj"), self.linear(a + ".k_proj"), self.linear(a + ".v_proj")

    def attn_out(self, i: int) -> Linear:
        return self.linear(f"model.layers.{i}.self_attn.o_proj")

    def mlp(self, i: int) -> list[Callable[[], Linear]]:
        m = f"model.layers.{i}.mlp"
        return [
            lambda: self.linear(m + ".gate_proj"),
            lambda: self.linear(m + ".up_proj"),
            lambda: self.linear(m + ".down_proj"),
        ]

    def final_norm(self) -> Linear:
        return self.norm("model.norm")

    def lm_head(self) -> Linear:
        return self.linear("lm_head") if self.has("lm_head.weight") else (self.embeddings(), None)


@register
class Falcon(Reader):
    family = "falcon"
    model_types = ("falcon",)

    def read_spec(self) -> Spec:
        if self.config.get("alibi"):
            raise ConversionError("Falcon with ALiBi positions is not supported for ONNX")
        if self.config.get("apply_residual_connection_post_layernorm"):
            raise ConversionError("Falcon with apply_residual_connection_post_layernorm is not supported for ONNX")
        hidden, n_head = self.cfg("hidden_size", "n_embed"), self.cfg("num_attention_heads", "n_head")
        new = bool(self.config.get("new_decoder_architecture"))
        if new:
            n_kv = self.cfg("num_kv_heads", "n_head_kv", default=n_head)
        else:
            n_kv = 1 if self.config.get("multi_query", True) else n_head
        if self.has("transformer.h.0.ln_attn.weight"):
            block = "parallel2"
        elif self.has("transformer.h.0.post_attention_layernorm.weight"):
            block = "sequential"
        else:
            block = "parallel"
        return Spec(
            n_layer=self.cfg("num_hidden_layers", "n_layer"),
            hidden=hidden,
            n_head=n_head,
            n_kv=n_kv,
            head_dim=hidden // n_head,
            rotary_dim=hidden // n_head,
            rope_theta=float(self.cfg("rope_theta", default=10000.0)),
            norm="layer",
            eps=float(self.cfg("layer_norm_epsilon", default=1e-5)),
            activation=self.activation("activation", default="gelu"),
            block=block,
            gated=False,
        )

    def embeddings(self) -> np.ndarray:
        return self.get("transformer.word_embeddings.weight")

    def norms(self, i: int) -> list[Linear]:
        h = f"transformer.h.{i}"
        if self.spec.block == "parallel2":
            return [self.norm(h + ".ln_attn"), self.norm(h + ".ln_mlp")]
        if self.spec.block == "sequential":
            return [self.norm(h + ".input_layernorm"), self.norm(h + ".post_attention_layernorm")]
        return [self.norm(h + ".input_layernorm")]

    def qkv(self, i: int) -> tuple[Linear, Linear, Linear]:
        s = self.spec
        w, b = self.linear(f"transformer.h.{i}.self_attention.query_key_value")
        sizes = [s.n_head * s.head_dim, s.n_kv * s.head_dim, s.n_kv * s.head_dim]
        ws = _split_rows(grouped_qkv_to_blocks(w, s.n_head, s.n_kv), sizes)
        bs = _split_bias(None if b is None else grouped_qkv_to_blocks(b, s.n_head, s.n_kv), sizes)
        return (ws[0], bs[0]), (ws[1], bs[1]), (ws[2], bs[2])

    def attn_out(self, i: int) -> Linear:
        return self.linear(f"transformer.h.{i}.self_attention.dense")

    def mlp(self, i: int) -> list[Callable[[], Linear]]:
        h = f"transformer.h.{i}.mlp"
        return [lambda: self.linear(h + ".dense_h_to_4h"), lambda: self.linear(h + ".dense_4h_to_h")]

    def final_norm(self) -> Linear:
        return self.norm("transformer.ln_f")

    def lm_head(self) -> Linear:
        return self.linear("lm_head") if self.has("lm_head.weight") else (self.embeddings(), None)
