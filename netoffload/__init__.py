"""netoffload: keep NIC offload settings in line with a pool-wide policy.

Everything in this package runs in dom0: standard library, XenAPI and
XenAPIPlugin only, Python 3.6 and newer.
"""

# The single version source: setup.py, the RPM spec, update.xml and the
# plugin's `version` function all read it from here.
__version__ = "0.1.0"

# The plugin API level reported by the `version` function.
API_LEVEL = 1
