"""Local inference with MLX: discovery, loading, memory budget, the generation thread."""
