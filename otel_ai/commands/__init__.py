"""CLI subcommands, one module per verb; each exposes `register(subparsers)`."""
