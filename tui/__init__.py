"""The Textual workbench app."""
