"""A tiny `xe` look-alike against the simulator, for benchmarks.

It reproduces the cost shape of the original scripts: one process per
command, each logging in, making its calls and logging out. Supported:

    xe vm-list|vif-list|pif-list [field=value ...] [params=uuid] --minimal
    xe vif-param-set|pif-param-set uuid=U other-config:KEY=VALUE ...
    xe pif-param-set uuid=U properties:gro=on|off    (PIF.set_property)
    xe vif-param-get|pif-param-get uuid=U param-name=other-config [param-key=K]
    xe vif-param-remove|pif-param-remove uuid=U param-name=other-config param-key=K

The simulator is found via --socket PATH / XE_SIM_SOCKET or --url / XE_SIM_URL.
`param-set` on a map key removes then adds the key, as xe does.
"""
import os
import sys

import XenAPI

_CLASSES = {"vm": "VM", "vif": "VIF", "pif": "PIF", "network": "network",
            "host": "host"}
# xe filter names (dashes) -> record field, for refs given by uuid
_REF_FILTERS = {"vm-uuid": ("VM", "VM"), "host-uuid": ("host", "host"),
                "network-uuid": ("network", "network")}


class XeError(Exception):
    pass


def _session(socket_path, url):
    if socket_path:
        session = XenAPI.Session("http://%s/" % socket_path.replace("/", "_"),
                                 transport=XenAPI.UDSTransport())
    elif url:
        session = XenAPI.Session(url)
    else:
        raise XeError("no simulator: set XE_SIM_SOCKET or XE_SIM_URL")
    session.login_with_password("root", "", "1.0", "xe-sim")
    return session


def _parse(words):
    params, flags = {}, set()
    for word in words:
        if word.startswith("--"):
            flags.add(word[2:])
        elif "=" in word:
            key, _, value = word.partition("=")
            params[key] = value
        else:
            raise XeError("unexpected argument: %s" % word)
    return params, flags


def _list(api, cls, params, flags):
    filters = dict((k, v) for k, v in params.items() if k != "params")
    records = getattr(api, cls).get_all_records()
    uuids = []
    for rec in records.values():
        keep = True
        for key, value in filters.items():
            if key in _REF_FILTERS:
                other_cls, field = _REF_FILTERS[key]
                keep = rec.get(field) not in (None, "OpaqueRef:NULL") and \
                    getattr(api, other_cls).get_uuid(rec[field]) == value
            else:
                keep = str(rec.get(key.replace("-", "_"))) == value
            if not keep:
                break
        if keep:
            uuids.append(rec["uuid"])
    if "minimal" in flags:
        return ",".join(uuids)
    return "\n".join("uuid ( RO)    : %s\n" % u for u in uuids)


def _map_field(name, cls=None):
    if name == "properties" and cls in (None, "PIF"):
        return "properties"
    if name != "other-config":
        raise XeError("only other-config (and a PIF's properties) are "
                      "supported, not %s" % name)
    return "other_config"


def run(argv, socket_path=None, url=None):
    if not argv:
        raise XeError("usage: xe COMMAND [args]")
    command, words = argv[0], argv[1:]
    params, flags = _parse(words)
    obj, _, action = command.partition("-")
    cls = _CLASSES.get(obj)
    if cls is None:
        raise XeError("unknown command %s" % command)
    session = _session(socket_path, url)
    try:
        api = session.xenapi
        klass = getattr(api, cls)
        if action == "list":
            return _list(api, cls, params, flags)
        ref = klass.get_by_uuid(params.pop("uuid"))
        if action == "param-set":
            for key, value in params.items():
                name, _, map_key = key.partition(":")
                field = _map_field(name, cls)
                if field == "properties":
                    # xe calls PIF.set_property for properties:NAME=VALUE
                    klass.set_property(ref, map_key, value)
                    continue
                getattr(klass, "remove_from_" + field)(ref, map_key)
                getattr(klass, "add_to_" + field)(ref, map_key, value)
            return ""
        field = _map_field(params["param-name"], cls)
        if action == "param-get":
            values = getattr(klass, "get_" + field)(ref)
            if "param-key" in params:
                return values[params["param-key"]]
            return "; ".join("%s: %s" % kv for kv in sorted(values.items()))
        if action == "param-remove":
            if field == "properties":
                raise XeError("properties cannot be removed, only set")
            getattr(klass, "remove_from_" + field)(ref, params["param-key"])
            return ""
        raise XeError("unknown command %s" % command)
    finally:
        session.xenapi.session.logout()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    socket_path = os.environ.get("XE_SIM_SOCKET")
    url = os.environ.get("XE_SIM_URL")
    while argv and argv[0] in ("--socket", "--url"):
        if argv[0] == "--socket":
            socket_path = argv[1]
        else:
            url = argv[1]
        argv = argv[2:]
    try:
        output = run(argv, socket_path, url)
    except (XeError, KeyError) as exc:
        sys.stderr.write("xe: %s\n" % exc)
        return 1
    except XenAPI.Failure as exc:
        sys.stderr.write("The server failed to handle your request.\n%s\n" % exc.details)
        return 1
    if output:
        sys.stdout.write(output + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
