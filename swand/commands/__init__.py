"""Subcommands of the swand CLI, one module each."""
