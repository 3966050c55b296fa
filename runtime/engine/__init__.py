"""The generation engine: the backend protocol, the llama.cpp and ONNX Runtime backends,
samplers, the text stream, the generation loop and saved KV state.
"""
