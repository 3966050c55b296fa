"""The models a user works with: models.lock, resolving names, the hub, pinning, integrity,
the GGUF header.
"""
