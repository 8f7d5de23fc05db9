"""Diagnostics (issue 6): placeholder until it lands."""

PLUGIN_FUNCTIONS = {}
