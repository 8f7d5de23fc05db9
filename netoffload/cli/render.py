"""Human output of the CLI: tables and notes, at most 100 columns.

Everything here takes the plugin's JSON (docs/policy.md) and returns or
writes text; nothing talks to xapi. The "why" of a device comes from the
provenance fields of a status entry (`sources`, `contributing`,
`shadowed`, `overrides`, `drift`); an entry from a plugin that predates
them is explained from `level` and `explicit` alone.
"""
import textwrap
import time

from netoffload.engine.features import FEATURES
from netoffload.engine.policy import NONE, PROFILES
from netoffload.pool import keys

MAX_WIDTH = 100
ELLIPSIS = ".."  # ASCII: dom0's plugin-less shell may have no UTF-8 locale

# Sources of a feature other than a policy level (docs/policy.md).
SOURCE_EXPLICIT = "explicit"
SOURCE_FORCE = "force"
SOURCE_PROPERTY = "property"
SOURCE_ORDER = (SOURCE_EXPLICIT, SOURCE_PROPERTY, SOURCE_FORCE, "vm", "tag",
                "network", "host", "pool")


def text(value):
    """A JSON value for people: None is '-', never 'None'."""
    if value is None or value == "":
        return "-"
    return str(value)


def features_text(mapping):
    """{f: on|off} as a profile name when it is one, else f=v,... in
    FEATURES order; '-' when empty."""
    mapping = dict(mapping or {})
    if not mapping:
        return "-"
    for name in sorted(PROFILES):
        if name != NONE and PROFILES[name] == mapping:
            return name
    order = [f for f in FEATURES if f in mapping] + sorted(
        f for f in mapping if f not in FEATURES)
    return ",".join("%s=%s" % (f, mapping[f]) for f in order)


def off_text(features):
    """Features that are off: a profile name when they make one, else the
    feature names."""
    shown = features_text(dict((f, "off") for f in features))
    if "=" not in shown:
        return shown
    return ",".join(f for f in FEATURES if f in features) or "-"


def policy_text(value):
    """A stored policy for people: None (nothing stored) is '(none set)'."""
    return "(none set)" if value is None else value


def _shorten(cell, width):
    if len(cell) <= width:
        return cell
    return cell[:max(width - len(ELLIPSIS), 1)] + ELLIPSIS


def table(rows, headers, out, max_width=MAX_WIDTH, shrink=None):
    """Aligned columns. When a line would pass max_width, the columns named
    in `shrink` (indexes, widest first) are cut down with '..'."""
    rows = [[text(c) if c in (None, "") else str(c) for c in row]
            for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows])
              for i, h in enumerate(headers)]
    for index in shrink or ():
        excess = sum(widths) + 2 * (len(widths) - 1) - max_width
        if excess <= 0:
            break
        widths[index] = max(len(headers[index]), 6, widths[index] - excess)
    for row in [list(headers)] + rows:
        cells = [_shorten(c, w) for c, w in zip(row, widths)]
        line = "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
        out.write(line + "\n")


def wrap(line, out, indent="  "):
    """One note, wrapped at MAX_WIDTH, continuation lines indented."""
    for part in textwrap.wrap(line, MAX_WIDTH,
                              subsequent_indent=indent + "  ",
                              break_long_words=True, break_on_hyphens=False):
        out.write(part + "\n")


# -- provenance --------------------------------------------------------------

def sources_of(dev):
    """{feature: source} of a status/plan entry. With the provenance
    fields, `sources`; without them (an older plugin), the policy level for
    each desired feature and "explicit" for each explicit on/off key."""
    if isinstance(dev.get("sources"), dict):
        return dict(dev["sources"])
    result = {}
    for feature in dev.get("desired") or {}:
        result[feature] = dev.get("level") or "policy"
    for feature, value in (dev.get("explicit") or {}).items():
        if value in ("on", "off"):
            result[feature] = SOURCE_EXPLICIT
    return result


def wanted_of(dev):
    """Every feature the device should have: the policy's (`desired`) and
    the explicit on/off keys that beat it."""
    sources = sources_of(dev)
    wanted = dict((f, v) for f, v in (dev.get("explicit") or {}).items()
                  if v in ("on", "off") and
                  sources.get(f) in (SOURCE_EXPLICIT, SOURCE_PROPERTY))
    for item in dev.get("overrides") or []:  # a PIF property is no key
        if item.get("value") in ("on", "off") and \
                sources.get(item.get("feature")) == item.get("source"):
            wanted[item["feature"]] = item["value"]
    wanted.update(dev.get("desired") or {})
    return wanted


def _source_rank(source):
    base = source.split(":", 1)[0]
    return (SOURCE_ORDER.index(base) if base in SOURCE_ORDER
            else len(SOURCE_ORDER), source)


def why(dev):
    """The short WHY cell of a device: where its desired features come
    from ('pool', 'tag:pfsense', 'explicit(tx) pool(sg)', 'opt-out (vm)',
    'INVALID (pool)' or '-')."""
    if dev.get("policy") == "INVALID":
        return "INVALID (%s)" % text(dev.get("level"))
    sources = sources_of(dev)
    if not sources:
        if dev.get("policy") == NONE and dev.get("level"):
            return "opt-out (%s)" % dev["level"]
        return "-"
    groups = {}
    for feature, source in sources.items():
        groups.setdefault(source, []).append(feature)
    if len(groups) == 1:
        return list(groups)[0]
    parts = []
    for source in sorted(groups, key=_source_rank):
        features = [f for f in FEATURES if f in groups[source]]
        parts.append("%s(%s)" % (source, ",".join(features)))
    return " ".join(parts)


def why_notes(dev):
    """The lines that explain a device beyond its WHY cell: each explicit
    setting and why it wins, the policy it beats, shadowed levels, an
    invalid policy, drift."""
    notes = []
    name = dev.get("device") or dev.get("label") or "?"
    overrides = dev.get("overrides")
    if overrides is None:  # an older plugin: only the explicit keys
        overrides = [{"feature": f, "value": v, "source": SOURCE_EXPLICIT,
                      "why": "not written by netoffload"}
                     for f, v in sorted((dev.get("explicit") or {}).items())
                     if sources_of(dev).get(f) == SOURCE_EXPLICIT]
    beaten = ""
    if dev.get("policy") not in (None, NONE, "INVALID"):
        beaten = "; beats the %s policy %s" % (text(dev.get("level")),
                                              dev["policy"])
    groups = []  # one line per (source, why, value): features together
    for item in overrides:
        key = (item.get("source") or SOURCE_EXPLICIT, item.get("why"),
               text(item.get("value")))
        for group in groups:
            if group[0] == key:
                group[1].append(item.get("feature"))
                break
        else:
            groups.append((key, [item.get("feature")]))
    for (source, reason, value), features in groups:
        features = [f for f in FEATURES if f in features] + [
            f for f in features if f not in FEATURES]
        notes.append("%s: %s=%s %s %s: %s%s" % (
            name, ",".join(features), value,
            "is" if len(features) == 1 else "are", source, reason, beaten))
    overridden = set(item.get("feature") for item in overrides)
    own = [f for f in FEATURES if sources_of(dev).get(f) == SOURCE_EXPLICIT
           and f not in overridden and
           (dev.get("explicit") or {}).get(f) in ("on", "off")]
    if own:
        notes.append("%s: %s explicit: set outside netoffload, and no "
                     "policy here names %s" % (
                         name, ",".join("%s=%s" % (f, dev["explicit"][f])
                                        for f in own),
                         "it" if len(own) == 1 else "them"))
    ignored = dev.get("ignored_by_xapi") or []
    if ignored:
        notes.append("%s: xapi ignores the value of %s (%s): neither on nor "
                     "off" % (name, ", ".join("ethtool-" + f for f in ignored),
                              ", ".join("%s" % (dev.get("explicit") or {}).get(
                                  f) for f in ignored)))
    if dev.get("policy") == "INVALID":
        notes.append("%s: INVALID policy at %s, treated as none (nothing "
                     "changed): %s" % (name, text(dev.get("level")),
                                       text(dev.get("policy_error"))))
    elif dev.get("policy") == NONE and dev.get("level"):
        notes.append("%s: opted out at %s (policy none): netoffload leaves "
                     "it as it is" % (name, dev["level"]))
    shadowed = dev.get("shadowed") or []
    if shadowed:
        notes.append("%s: shadowed: %s (a higher level decides every "
                     "feature %s)" % (
                         name, ", ".join("%s %s" % (item.get("level"),
                                                    item.get("policy"))
                                         for item in shadowed),
                         "it names" if len(shadowed) == 1 else "they name"))
    drift = dev.get("drift")
    if drift:
        since = drift.get("since")
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) \
            if isinstance(since, (int, float)) else "?"
        notes.append("%s: DRIFT since %s: live %s differs from the policy%s" % (
            name, when, features_text(drift.get("features")),
            " (held by `netoffload set`: left alone until `netoffload "
            "restore`)" if drift.get("held") else ""))
    return notes


# -- devices, objects, hosts -------------------------------------------------

def state_of(dev):
    """The STATE cell of a status or apply/revert device entry."""
    if "compliant" in dev:
        if dev.get("error"):
            return "ERROR"
        if dev.get("policy") == "INVALID":
            return "INVALID policy"
        if dev["compliant"]:
            state = "ok"
        else:
            differs = dev.get("differs") or []
            pending = sorted(dev.get("pending_restore") or {})
            parts = []
            if differs:
                parts.append("differs: " + ",".join(differs))
            if pending:
                parts.append("to restore: " + ",".join(pending))
            state = "; ".join(parts) or "not compliant"
        if dev.get("db_compliant") is False:
            state += " (db keys pending)"
        if dev.get("drift"):
            state += " DRIFT"
        return state
    outcomes = dev.get("features") or {}
    action = dev.get("action") or ""
    if action == "held":
        return "HELD: left alone"
    state = {"plan": "would change", "apply": "applied", "restore":
             "restored", "none": "nothing to do"}.get(action, action)
    changed = [f for f in FEATURES if outcomes.get(f) in (
        "changed", "forced", "would-change")]
    failed = [f for f in FEATURES if outcomes.get(f) == "failed"]
    restore = dev.get("restore") or {}
    if action == "plan" and not changed and restore:
        changed = [f for f in FEATURES if f in restore]
    if action in ("plan", "apply") and not changed and not failed:
        state = "nothing to do" if action == "plan" else "in line"
    elif changed:
        state += ": " + ",".join(changed)
    if failed:
        state += " FAILED: " + ",".join(failed)
    if dev.get("ok") is False and dev.get("errors") and not failed:
        state += " FAILED"
    return state


def hold_note(dev):
    """Why apply left a device alone: an admin's `netoffload set`."""
    name = dev["device"]
    wanted = (dev.get("held") or {}).get("wanted") or {}
    return ("%s: held by netoffload set (%s), left alone; `netoffload "
            "restore %s` ends the hold and brings it into policy" % (
                name, ",".join("%s=%s" % item for item in sorted(
                    wanted.items())), name))


def print_devices(devices, out, explain=True):
    """A device table (status, or the live part of apply/revert), then the
    notes that say why."""
    rows = []
    notes = []
    for dev in devices:
        vm = (dev.get("vm") or {}).get("name_label") or "-"
        if dev.get("device") is None:  # a PIF with no kernel device (OVS)
            rows.append([dev.get("pif") or "-", dev.get("kind", "pif"), "-",
                         "-", "-", dev.get("note", "")])
            continue
        rows.append([dev["device"], dev.get("kind", "?"), vm,
                     features_text(wanted_of(dev)), why(dev), state_of(dev)])
        if explain:
            notes.extend(why_notes(dev))
        if dev.get("action") == "held":
            notes.append(hold_note(dev))
        for err in dev.get("errors") or ([dev["error"]] if dev.get("error")
                                         else []):
            notes.append("%s: %s" % (dev["device"], err))
    if not rows:
        out.write("(no devices)\n")
        return
    table(rows, ["DEVICE", "KIND", "VM", "DESIRED", "WHY", "STATE"], out,
          shrink=(2, 4, 5))
    for note in merge_notes(notes):
        wrap("  " + note, out, indent="  ")


def merge_notes(notes):
    """"dev: text" notes with the same text (a VM's vif and tap, the
    devices one policy covers) as one "dev1, dev2: text" line, in order."""
    merged = []
    index = {}
    for note in notes:
        device, sep, rest = note.partition(": ")
        if not sep:
            merged.append([[], note])
            continue
        if rest in index:
            merged[index[rest]][0].append(device)
        else:
            index[rest] = len(merged)
            merged.append([[device], rest])
    return [("%s: %s" % (", ".join(devices), rest)) if devices else rest
            for devices, rest in merged]


def print_objects(objects, out):
    rows = []
    for obj in objects:
        writes = obj.get("writes", obj.get("written")) or []
        changed = dict((keys.feature_of_key(k), v) for k, v in writes
                       if keys.feature_of_key(k))
        set_to = dict((f, v) for f, v in changed.items() if v is not None)
        removed = [f for f in FEATURES if f in changed and changed[f] is None]
        shown = []
        if set_to:
            shown.append(features_text(set_to))
        if removed:
            shown.append("removed: " + ",".join(removed))
        rows.append([obj["class"], obj["label"], obj.get("status", "planned"),
                     " ".join(shown) or "-"])
    if rows:
        table(rows, ["CLASS", "OBJECT", "STATUS", "ETHTOOL KEYS"], out,
              shrink=(1, 3))


def print_skipped(skipped, out):
    """Objects a change leaves alone because they have no dom0 device."""
    for entry in skipped or []:
        out.write("skipped %s: %s (no dom0 device)\n" % (entry["label"],
                                                        entry["reason"]))


def host_line(host):
    return "host %s" % (host.get("name_label") or host.get("uuid") or "?")


def print_hosts(hosts, out):
    for host in hosts or []:
        out.write("\n" + host_line(host))
        if not host["ok"]:
            out.write(": UNREACHABLE %s\n" % " ".join(host.get("error") or []))
            continue
        out.write("\n")
        print_devices(host["result"].get("devices") or [], out)


def summary_line(result):
    """The summary of an apply/revert in words, over every host."""
    summary = result.get("summary") or {}
    objects = summary.get("objects") or {}
    parts = []
    for status in sorted(objects):
        parts.append("%d %s" % (objects[status], status))
    hosts = result.get("hosts")
    device_summaries = [summary] if not hosts else [
        (h["result"].get("summary") or {}) for h in hosts if h.get("ok")]
    devices = sum(s.get("devices") or 0 for s in device_summaries)
    changed = sum(s.get("devices_changed") or 0 for s in device_summaries)
    failed = sum(len(s.get("devices_failed") or []) for s in device_summaries)
    held = sum(len(s.get("devices_held") or []) for s in device_summaries)
    line = "objects: %s; devices: %d, %d changed, %d failed" % (
        ", ".join(parts) or "none", devices, changed, failed)
    if held:
        line += ", %d held by netoffload set (left alone)" % held
    if hosts:
        down = [h["name_label"] for h in hosts if not h.get("ok")]
        line += "; hosts: %d%s" % (len(hosts), ", unreachable: " +
                                   ", ".join(down) if down else "")
    return line


def print_policy_changes(policies, out):
    for pol in policies or []:
        out.write("policy %s %s %s: %s -> %s\n" % (
            pol["class"], pol.get("name") or pol.get("uuid"), pol["key"],
            policy_text(pol.get("previous")), policy_text(pol.get("policy"))))


def print_result(result, out):
    """An apply or revert result, or its dry-run plan."""
    print_policy_changes(result.get("policy"), out)
    print_objects(result.get("objects") or [], out)
    print_skipped((result.get("target") or {}).get("skipped"), out)
    for kept in result.get("kept") or []:
        wrap("kept: %s" % ", ".join("%s=%s" % (k, text(v)) for k, v in
                                     sorted(kept.items())), out)
    if not result.get("hosts"):
        out.write("\nthis host (%s):\n" % result["host"]["name_label"])
        print_devices(result.get("devices") or [], out, explain=False)
    else:
        for host in result["hosts"]:
            out.write("\n" + host_line(host))
            if not host["ok"]:
                out.write(": UNREACHABLE %s\n" % " ".join(host.get("error")
                                                          or []))
                continue
            out.write("\n")
            print_devices(host["result"].get("devices") or [], out,
                          explain=False)
    live_only = sorted(set(f for o in result.get("objects") or []
                           for f in (o.get("live_only") or {})))
    if live_only:
        out.write("\n")
        wrap("note: %s on VIFs are enforced live only (xapi ignores "
             "ethtool-gro/lro on VIFs)" % ",".join(live_only), out)
    out.write("%s%s\n" % ("plan: " if result.get("dry_run") else "done: ",
                          summary_line(result)))
