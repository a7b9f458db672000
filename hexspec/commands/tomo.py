"""`hexspec tomo reconstruct | segment | quantify`: the X-ray CT companion.

Each subcommand lives in its own module (tomo_reconstruct, tomo_segment, tomo_quantify)
that defines ``register(subparsers)``; this module only groups them.
"""

from __future__ import annotations

from . import register_modules

SUBCOMMANDS = ("tomo_reconstruct", "tomo_segment", "tomo_quantify")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tomo", help="X-ray CT companion: reconstruct, segment and quantify electrode volumes",
        description="X-ray CT companion: reconstruct projections, segment pores from solid, "
                    "quantify each depth region (porosity, tortuosity, surface area).")
    sub = parser.add_subparsers(dest="tomo_command", metavar="STEP")
    register_modules(sub, SUBCOMMANDS)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
