"""One plugin call's view of the pool: a XAPI wrapper, one snapshot of the
database and this host (from the inventory, never the session's host).
"""
from netoffload.pool import xapi


class CallContext(object):
    """One call's view: the wrapper, a snapshot and this host."""

    def __init__(self, session, client=None):
        self.xapi = client or xapi.Xapi(session)
        self.records = self.xapi.snapshot()
        self.host_uuid = xapi.local_host_uuid()
        self.host_ref = self.records.host_by_uuid(self.host_uuid) or \
            self.xapi.local_host_ref(self.host_uuid)

    def host_json(self, host_ref=None):
        ref = host_ref or self.host_ref
        rec = self.records.hosts.get(ref) or {}
        return {"uuid": rec.get("uuid", ""),
                "name_label": rec.get("name_label", "")}
