"""This host's devices, and nothing else: never XAPI.

The feature table (features), the policy grammar (policy), device names
(devices), reading and setting offload features (ethtool, ethtool_ioctl)
and the record of live changes that `restore` undoes (livestate).

May import: the top-level modules (errors, log, paths, runner, statedir)
and engine/ itself.
"""
