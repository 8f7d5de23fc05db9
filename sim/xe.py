"""An `xe` stand-in against the simulator: the commands the README and the
classic how-tos use, with xe's syntax and output (never shipped).

One process per command, each logging in, making its calls and logging
out, as xe does (the benchmarks count on that cost shape). Supported:

    xe pool-list|host-list|vm-list|vif-list|pif-list|network-list
         [FIELD=VALUE ...] [params=a,b|all] [--minimal]
    xe CLASS-param-list uuid=U
    xe CLASS-param-get uuid=U param-name=F [param-key=K]
    xe CLASS-param-set uuid=U F=V | other-config:K=V | properties:K=V ...
    xe CLASS-param-remove uuid=U param-name=other-config param-key=K
    xe vm-start (vm=NAME-or-UUID | uuid=U) [on=HOST]
    xe vm-shutdown (vm=NAME-or-UUID | uuid=U) [--force]
    xe vif-create vm-uuid=U network-uuid=U device=N [mac=M] [other-config:K=V]
    xe host-call-plugin host-uuid=U plugin=P fn=F [args:K=V ...]

Field names are xe's: dashes for underscores, a reference shown as the
uuid it points to (`vm-uuid`, `network-uuid`, `host-uuid`), maps as
`k: v; k2: v2`. The simulator is found via --socket PATH / XE_SIM_SOCKET or
--url / XE_SIM_URL. `param-set` on a map key removes then adds the key, as
xe does.
"""
import os
import sys

import XenAPI

CLASSES = {"pool": "pool", "host": "host", "vm": "VM", "vif": "VIF",
           "pif": "PIF", "network": "network"}
# What `xe <class>-list` prints without params=, as xe does.
DEFAULT_PARAMS = {
    "pool": ("uuid", "name-label", "name-description", "master"),
    "host": ("uuid", "name-label", "name-description"),
    "vm": ("uuid", "name-label", "power-state"),
    "vif": ("uuid", "vm-uuid", "device", "network-uuid"),
    "pif": ("uuid", "device", "currently-attached", "VLAN", "network-uuid"),
    "network": ("uuid", "name-label", "name-description", "bridge"),
}
# Reference fields shown as the uuid they point to, under xe's name.
REF_NAMES = {"VM": "vm-uuid", "network": "network-uuid", "host": "host-uuid"}
# Fields xe lets you write (RW/MRW/SRW); every other one is RO/MRO/SRO.
WRITABLE = frozenset(("name_label", "name_description", "other_config",
                      "tags", "HVM_boot_policy", "xenstore_data", "platform",
                      "blocked_operations", "qos_algorithm_type",
                      "qos_algorithm_params", "is_a_template", "affinity",
                      "properties"))
# Reference lists xe does not print in param-list (it has other commands).
HIDDEN = frozenset(("VIFs", "PIFs", "resident_VMs", "metrics", "snapshot"))
# Filters xe applies to vm-list unless given: no templates, no dom0.
VM_DEFAULT_FILTERS = {"is-a-template": "false", "is-control-domain": "false"}


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
            raise XeError("Syntax error: %s is not of the form key=value"
                          % word)
    return params, flags


class Uuids(object):
    """ref -> uuid, fetched once per class as needed."""

    def __init__(self, api):
        self.api = api
        self._tables = {}

    def of(self, ref):
        if not ref or ref == "OpaqueRef:NULL":
            return "<not in database>"
        for cls in ("host", "VM", "network", "PIF", "VIF", "pool"):
            table = self._tables.get(cls)
            if table is None:
                table = self._tables[cls] = dict(
                    (r, rec["uuid"]) for r, rec in
                    getattr(self.api, cls).get_all_records().items())
            if ref in table:
                return table[ref]
        return "<not in database>"


def _xe_name(field):
    return REF_NAMES.get(field, field.replace("_", "-"))


def _value(field, value, uuids):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "; ".join("%s: %s" % kv for kv in sorted(value.items()))
    if isinstance(value, list):
        return "; ".join(uuids.of(v) if str(v).startswith("OpaqueRef:")
                         else str(v) for v in value) if field != "tags" \
            else ", ".join(value)
    if isinstance(value, str) and value.startswith("OpaqueRef:"):
        return uuids.of(value)
    if field == "power_state":
        return str(value).lower()
    return str(value)


def _mode(field, value):
    kind = "M" if isinstance(value, dict) else \
        "S" if isinstance(value, list) else ""
    return kind + ("RW" if field in WRITABLE else "RO")


def _fields(record, uuids):
    """[(xe name, mode, text)] of a record, uuid first, as param-list shows."""
    rows = []
    for field in ["uuid"] + sorted(f for f in record if f != "uuid"):
        if field in HIDDEN:
            continue
        value = record[field]
        rows.append((_xe_name(field), _mode(field, value),
                     _value(field, value, uuids)))
    return rows


def _format_records(records):
    """xe's layout: the field names right-aligned, one blank line between
    records."""
    blocks = []
    for rows in records:
        heads = ["%s ( %s)" % (name, mode) for name, mode, _ in rows]
        width = max([len(h) for h in heads] or [0])
        blocks.append("\n".join("%s: %s" % (h.rjust(width), text)
                                for h, (_, _, text) in zip(heads, rows)))
    return "\n\n\n".join(blocks) + ("\n" if blocks else "")


def _selected(obj, params):
    wanted = params.get("params")
    if wanted == "all":
        return None
    if wanted:
        return wanted.split(",")
    return list(DEFAULT_PARAMS[obj])


def _list(api, obj, params, flags):
    cls = CLASSES[obj]
    uuids = Uuids(api)
    filters = dict((k, v) for k, v in params.items() if k != "params")
    if obj == "vm":
        filters = dict(VM_DEFAULT_FILTERS, **filters)
    matched = []
    for rec in getattr(api, cls).get_all_records().values():
        shown = dict((name, text) for name, _, text in _fields(rec, uuids))
        if all(shown.get(k) == v for k, v in filters.items()):
            matched.append(rec)
    wanted = _selected(obj, params)
    if "minimal" in flags:
        field = (wanted or ["uuid"])[0]
        return ",".join(dict((n, t) for n, _, t in _fields(rec, uuids)).get(
            field, "") for rec in matched)
    records = []
    for rec in matched:
        rows = _fields(rec, uuids)
        if wanted is not None:
            by_name = dict((row[0], row) for row in rows)
            rows = [by_name[name] for name in wanted if name in by_name]
        records.append(rows)
    return _format_records(records).rstrip("\n")


def _map_field(name):
    if name not in ("other-config", "properties"):
        raise XeError("only the maps other-config and properties are "
                      "supported here, not %s" % name)
    return name.replace("-", "_")


def _by_uuid(klass, params):
    if "uuid" not in params:
        raise XeError("This operation needs the parameter uuid.")
    return klass.get_by_uuid(params.pop("uuid"))


def _vm_ref(api, params):
    """vm=NAME-or-UUID or uuid=U, as xe's VM selectors take them."""
    if "uuid" in params:
        return api.VM.get_by_uuid(params.pop("uuid"))
    name = params.pop("vm", None)
    if name is None:
        raise XeError("This operation needs vm=NAME-or-UUID or uuid=UUID.")
    matches = [ref for ref, rec in api.VM.get_all_records().items()
               if name in (rec["uuid"], rec["name_label"]) and
               not rec["is_a_template"]]
    if len(matches) != 1:
        raise XeError("%s VMs match vm=%s." % (
            "No" if not matches else "Several", name))
    return matches[0]


def _param_set(api, cls, ref, params):
    klass = getattr(api, cls)
    for key, value in params.items():
        name, colon, map_key = key.partition(":")
        if colon:
            field = _map_field(name)
            if field == "properties":
                klass.set_property(ref, map_key, value)
                continue
            getattr(klass, "remove_from_" + field)(ref, map_key)
            getattr(klass, "add_to_" + field)(ref, map_key, value)
        else:
            field = name.replace("-", "_")
            if field not in WRITABLE:
                raise XeError("The parameter %s is read-only." % name)
            getattr(klass, "set_" + field)(ref, value)


def _host_call_plugin(api, params):
    args = dict((k[len("args:"):], v) for k, v in params.items()
                if k.startswith("args:"))
    host = api.host.get_by_uuid(params.get("host-uuid", ""))
    return api.host.call_plugin(host, params.get("plugin", ""),
                                params.get("fn", ""), args)


def _vif_create(api, params):
    record = {"device": params.get("device", "0"),
              "network": api.network.get_by_uuid(params.get("network-uuid", "")),
              "VM": api.VM.get_by_uuid(params.get("vm-uuid", "")),
              "MAC": params.get("mac", ""), "MTU": params.get("mtu", "1500"),
              "qos_algorithm_type": "", "qos_algorithm_params": {},
              "other_config": dict((k[len("other-config:"):], v)
                                   for k, v in params.items()
                                   if k.startswith("other-config:"))}
    return api.VIF.get_uuid(api.VIF.create(record))


def _dispatch(api, command, params, flags):
    if command == "host-call-plugin":
        return _host_call_plugin(api, params)
    if command == "vif-create":
        return _vif_create(api, params)
    if command == "vm-start":
        vm = _vm_ref(api, params)
        if params.get("on"):
            hosts = [ref for ref, rec in api.host.get_all_records().items()
                     if params["on"] in (rec["uuid"], rec["name_label"])]
            if len(hosts) != 1:
                raise XeError("No host matches on=%s." % params["on"])
            api.VM.start_on(vm, hosts[0], False, False)
        else:
            api.VM.start(vm, False, False)
        return ""
    if command == "vm-shutdown":
        vm = _vm_ref(api, params)
        if "force" in flags:
            api.VM.hard_shutdown(vm)
        else:
            api.VM.clean_shutdown(vm)
        return ""
    obj, _, action = command.partition("-")
    cls = CLASSES.get(obj)
    if cls is None:
        raise XeError("Unknown command: %s" % command)
    if action == "list":
        return _list(api, obj, params, flags)
    klass = getattr(api, cls)
    ref = _by_uuid(klass, params)
    if action == "param-set":
        _param_set(api, cls, ref, params)
        return ""
    if action == "param-list":
        return _format_records([_fields(klass.get_record(ref), Uuids(api))]
                               ).rstrip("\n")
    if action == "param-get":
        name = params.get("param-name", "")
        record = klass.get_record(ref)
        fields = dict((n, t) for n, _, t in _fields(record, Uuids(api)))
        if "param-key" in params:
            values = record.get(_map_field(name), {})
            if params["param-key"] not in values:
                raise XeError("Key %s not found in map" % params["param-key"])
            return values[params["param-key"]]
        if name not in fields:
            raise XeError("Unknown field '%s'" % name)
        return fields[name]
    if action == "param-remove":
        field = _map_field(params.get("param-name", ""))
        if field == "properties":
            raise XeError("properties cannot be removed, only set")
        getattr(klass, "remove_from_" + field)(ref, params["param-key"])
        return ""
    raise XeError("Unknown command: %s" % command)


def run(argv, socket_path=None, url=None):
    if not argv:
        raise XeError("Usage: xe <command> [args]")
    command, words = argv[0], argv[1:]
    params, flags = _parse(words)
    session = _session(socket_path, url)
    try:
        return _dispatch(session.xenapi, command, params, flags)
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
        sys.stderr.write("%s\n" % exc)
        return 1
    except XenAPI.Failure as exc:
        details = [str(d) for d in exc.details]
        sys.stderr.write("The server failed to handle your request.\n"
                         "code: %s\nparams: %s\n" % (
                             details[0], ", ".join(details[1:])))
        return 1
    if output:
        sys.stdout.write(output + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
