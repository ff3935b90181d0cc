"""Reusable widgets of the workbench; each carries its own DEFAULT_CSS."""
