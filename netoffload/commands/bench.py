"""Placeholder until this verb group lands; registers nothing."""


def register(subparsers):
    return None
