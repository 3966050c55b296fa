"""talesmith.runtime: everything needed to generate text from a local model.

Nothing here imports torch or transformers; the conversion tools live in talesmith.convert.
"""
