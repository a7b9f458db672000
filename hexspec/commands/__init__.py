"""Subcommands of the `hexspec` command line, one module each (see hexspec.cli)."""

from importlib import import_module


def register_modules(subparsers, modules) -> None:
    """Add the subcommand of each module of hexspec.commands (its ``register(subparsers)``);
    a module not part of this build (an optional extra's) is left out."""
    for module in modules:
        try:
            mod = import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(f"{__name__}."):
                continue
            raise
        mod.register(subparsers)
