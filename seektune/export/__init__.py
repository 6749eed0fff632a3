"""Export building blocks: merged checkpoints, int8, ONNX and GGUF files."""
