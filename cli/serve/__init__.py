"""talesmith serve: a KoboldCpp- and OpenAI-compatible HTTP API over the slot engine (the `serve` extra)."""
