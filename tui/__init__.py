"""talesmith.tui: the terminal app for story writing and persona chat (Textual)."""
