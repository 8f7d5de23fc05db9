"""The xapi host plugin: thin functions over pool/ and diagnostics/
(functions, diagnostics), argument checks (args) and the mapping of
errors to XenAPIPlugin.Failure codes (dispatch). plugins/netoffload only
calls XenAPIPlugin.dispatch with dispatch.FUNCTIONS.

May import: the top-level modules, engine/, pool/, diagnostics/,
plugin/ itself, and the readers of what agents/ recorded (the watcher's
to-do and drift record) for status.
"""
