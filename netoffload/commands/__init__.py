"""CLI verb groups; each module exposes register(subparsers)."""
