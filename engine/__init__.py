"""Runs models (local MLX and cloud backends); knows nothing of rules, storage or screens."""
