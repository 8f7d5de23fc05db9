# Type stub for dom0's XenAPI module (PyPI "XenAPI", the same file).
# `session.xenapi.<class>.<message>(...)` is resolved by __getattr__ and sent
# over XML-RPC, so its results are Any; the checker infers a union of
# __getattr__'s return paths from the source, which no call site can use.
# tests/test_static_checks.py checks these names against the real module.
import xmlrpc.client
from typing import Any, List, Optional

class Failure(Exception):
    details: List[str]
    def __init__(self, details: List[str]) -> None: ...

class UDSTransport(xmlrpc.client.Transport): ...

class Session(xmlrpc.client.ServerProxy):
    transport: Optional[xmlrpc.client.Transport]
    def __init__(
        self,
        uri: str,
        transport: Optional[xmlrpc.client.Transport] = ...,
        encoding: Optional[str] = ...,
        verbose: bool = ...,
        allow_none: bool = ...,
        ignore_ssl: bool = ...,
    ) -> None: ...
    def xenapi_request(self, methodname: str, params: Any) -> Any: ...
    def __getattr__(self, name: str) -> Any: ...

def xapi_local() -> Session: ...
