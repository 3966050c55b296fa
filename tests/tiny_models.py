"""Tiny random Hugging Face checkpoints for conversion tests, with a tokenizer trained here."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "Once upon a time, there was a little boy named Tim. He liked to play with his toys.",
    "The storm had raged for three days when the knock came at the lighthouse door.",
    "When a traveler in north central Massachusetts takes the wrong fork at the junction.",
    "転生すると、ある能力を手に入れていた。それは、『予知』だ。",
    "あなたは異世界に転生してしまいました。勇者となって、仲間を作り、異世界を冒険しよう！",
    "Emoji too: 🐉🔥✨ and a dragon 🐲 flew over the castle 🏰.",
    "Aqua: Welcome to Axel! You: Can you heal me? <START> 1234 5678.",
] * 3
SAMPLE_TEXTS = {
    "english": "The little dragon knocked at the lighthouse door, and Tim opened it.",
    "japanese": "勇者は異世界で仲間を作り、冒険しよう！それは予知だ。",
    "emoji": "A dragon 🐉 and fire 🔥✨ over the castle 🏰!",
}


def train_tokenizer(folder: Path, vocab_size: int = 320, *, specials: tuple[str, ...] = ()) -> int:
    """A byte-level BPE tokenizer (GPT-2 style) saved as tokenizer.json; returns its size. `specials` are
    special tokens besides <|endoftext|> (a chat template's markers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", *specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(folder)
    return tok.get_vocab_size()


def make_model(kind: str, folder: Path, *, seed: int = 0, specials: tuple[str, ...] = ()) -> Path:
    """Save a tiny random checkpoint of `kind` (gpt2, gptj, llama, falcon-7b, falcon-new) in `folder`."""
    import torch
    import transformers as tf

    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = train_tokenizer(folder, specials=specials)
    common = dict(bos_token_id=0, eos_token_id=0)
    if kind == "gpt2":
        config = tf.GPT2Config(vocab_size=n_vocab, n_positions=64, n_embd=64, n_layer=2, n_head=4, **common)
        cls = tf.GPT2LMHeadModel
    elif kind == "gptj":  # embeddings padded past the tokenizer, rotary on part of each head, as in GPT-J 6B
        config = tf.GPTJConfig(
            vocab_size=n_vocab + 8, n_positions=64, n_embd=64, n_layer=2, n_head=4, rotary_dim=8, **common
        )
        cls = tf.GPTJForCausalLM
    elif kind == "llama":
        config = tf.LlamaConfig(
            vocab_size=n_vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            tie_word_embeddings=False,
            **common,
        )
        cls = tf.LlamaForCausalLM
    elif kind == "falcon-7b":
        config = tf.FalconConfig(
            vocab_size=n_vocab,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            multi_query=True,
            parallel_attn=True,
            new_decoder_architecture=False,
            bias=False,
            alibi=False,
            **common,
        )
        cls = tf.FalconForCausalLM
    elif kind == "falcon-new":
        config = tf.FalconConfig(
            vocab_size=n_vocab,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_kv_heads=2,
            new_decoder_architecture=True,
            bias=False,
            alibi=False,
            **common,
        )
        cls = tf.FalconForCausalLM
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def make_lora(
    kind: str,
    base: Path,
    folder: Path,
    *,
    seed: int,
    targets: list[str],
    rank: int = 4,
    alpha: int = 8,
    rslora: bool = False,
) -> Path:
    """A PEFT LoRA adapter with random (non-zero) weights for the base checkpoint."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=targets,
        init_lora_weights=False,
        fan_in_fan_out=kind == "gpt2",
        use_rslora=rslora,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(2.0)  # big enough to change the logits visibly
    peft_model.save_pretrained(folder)
    return folder


def make_spm_llama(folder: Path, *, seed: int = 0) -> Path:
    """A tiny Llama whose tokenizer is SentencePiece (tokenizer.model), as Llama 2's is."""
    import io

    import sentencepiece as spm
    import torch
    import transformers as tf

    folder.mkdir(parents=True, exist_ok=True)
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4),
        model_writer=model_bytes,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(model_bytes.getvalue())
    tok = tf.LlamaTokenizer(vocab_file=str(folder / "tokenizer.model"), legacy=True, add_bos_token=True)
    tok.save_pretrained(folder)
    config = tf.LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    cls = tf.LlamaForCausalLM
    cls(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder
