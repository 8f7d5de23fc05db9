"""The XAPI side: the pool database, precedence, and bringing it in line.

One way through it: records (a snapshot) -> precedence (the desired
features per VIF/PIF, pure) -> targeting (what a target names) ->
planning (the other-config writes per object) -> writer (the writes,
through xapi) and enforce (this host's live devices). keys holds every
other-config convention; levels says where policies live; fanout runs a
plugin function on the other hosts.

May import: the top-level modules, engine/ and pool/ itself.
"""
