"""talesmith.convert: Hugging Face checkpoints (with LoRA adapters merged) to GGUF files.

Imports torch and transformers only inside the functions that need them.
"""
