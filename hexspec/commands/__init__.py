"""Subcommands of the `hexspec` command line, one module each (see hexspec.cli)."""
