"""The embeddings service: texts to vectors with GGUF embedding models."""
