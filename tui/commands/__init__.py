"""Subcommands of the `mlx-workbench` command; each module has `register(subparsers)`."""
