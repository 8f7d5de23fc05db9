#!/usr/bin/env python3
"""README's benchmark rows, regenerated from bench/results/*.json.

    tools/readme_figures.py          rewrite the rows in README.md
    tools/readme_figures.py --check  exit 1 (and show the rows) when the
                                     README differs from the results

Only rows this script knows are touched: each is found by the benchmark's
name at the start of its first cell (ROWS) and rebuilt from its JSON, so a figure in
the README is always the one recorded in bench/results.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
RESULTS = os.path.join(ROOT, "bench", "results")


def _load(name):
    with open(os.path.join(RESULTS, name + ".json")) as handle:
        return json.load(handle)


def _kb(size):
    return "%.1f kB" % (size / 1000.0)


def bench_pack(data):
    return ("| `bench_pack` | RPM build %.1f s, pack ISO %.1f s (each build's "
            "%%check runs the no-root tests); RPM %s, ISO %s (installed %s) "
            "| none |" % (
                data["rpm_build_s_median"], data["pack_build_s_median"],
                _kb(data["rpm_bytes"]), _kb(data["iso_bytes"]),
                _kb(data["installed_bytes"])))


def bench_poolbox(data):
    row = ("| `bench_poolbox` | 3-host box built in %.2f s; whole demo story "
           "%.1f s" % (data["build"]["3"]["build_s_median"],
                       data["story"]["seconds"]))
    scale = data.get("scale", {})
    if "ratios" not in scale:
        return row + " | none |"
    small, big, ratios = scale["2"], scale["64"], scale["ratios"]
    return row + (
        "; 64 vs 2 hosts: `status --pool` %.1f vs %.2f s (%.1f×), `apply ALL "
        "--pool` %.1f vs %.2f s (%.1f×), where the box's floor (a `version` "
        "fan-out to 63 hosts, every member a plugin process on the same 2 "
        "CPUs) alone grows %.0f×; status and apply are %.2f× and %.2f× that "
        "floor; %d calls at once, calling plugin %.1f MiB peak | 64 hosts ≤ "
        "3× 2 hosts: not met, floor-bound (`bench/results/bench_poolbox.md`)"
        " |" % (
            big["status_pool_s_median"], small["status_pool_s_median"],
            ratios["status"], big["apply_all_pool_s"],
            small["apply_all_pool_s"], ratios["apply"], ratios["floor"],
            ratios["status_to_floor"], ratios["apply_to_floor"],
            big["watched_member_plugins_max"], big["watched_caller_rss_mib"]))


def _load_range(data):
    loads = [float(v) for v in data.get("loadavg_at_start", [])[:1]
             + data.get("loadavg", [])[:1]]
    if not loads:
        return ""
    low, high = min(loads), max(loads)
    return ", load average %s" % (
        "%.0f" % low if round(low) == round(high)
        else "%.0f-%.0f" % (low, high))


def bench_udev(data):
    median = data["median_ms"]
    met = "met" if data["pif_ratio_to_python_IS"] <= data["target_ratio"] \
        else "not met: the floor alone is %.2f× (docs/automatic.md)" % (
            data["minimal_floor_ratio_to_python_IS"])
    return (
        "| `bench_udev`: helper per device, cold, 10,000-VIF cache, vs "
        "`python3 -I -S -c pass` in the same run | PIF: %.1f ms, **%.2f×** "
        "wall, %.2f× CPU; guest (tap, without its `xenstore-read` stand-in): "
        "%.2f×; the floor (`bench/udev_floor.py`: cache entry, lock, record, "
        "ioctls, fsynced write, syslog line, nothing else) %.2f× wall, %.2f× "
        "CPU, so the helper is %.2f× its floor; %s child processes on the "
        "PIF path%s | ≤ %.1f×: %s |" % (
            median["helper PIF (veth eth*)"], data["pif_ratio_to_python_IS"],
            data["pif_cpu_ratio_to_python_IS"],
            data["guest_minus_stand_in_ratio_to_python_IS"],
            data["minimal_floor_ratio_to_python_IS"],
            data["minimal_floor_cpu_ratio_to_python_IS"],
            data["pif_ratio_to_minimal_floor"],
            len(data["children_on_pif_path"]) or "no",
            _load_range(data), data["target_ratio"], met))


def bench_boot(data):
    boots = [r["boot_s"] for r in data["rounds"]]
    loops = [r["ethtool_per_device_s"] for r in data["rounds"]]
    speedups = [r["speedup"] for r in data["rounds"]]
    every = min(speedups) >= data["target_speedup"]
    return (
        "| `bench_boot`: 1,000 devices (500 veth vifs + 500 taps) from the "
        "cache vs one `ethtool -K` per device | median of %d rounds "
        "**%.1f×** (%.1f-%.1f×; boot %.2f-%.2f s vs %.1f-%.1f s)%s | ≥ %d×: "
        "%s |" % (
            len(speedups), data["median_speedup"], min(speedups),
            max(speedups), min(boots), max(boots), min(loops), max(loops),
            _load_range(data), data["target_speedup"],
            "met in every round" if every else
            "met at the median, not in every round"
            if data["median_speedup"] >= data["target_speedup"] else "not met"))


def bench_apply(data):
    mine = data["netoffload"]
    loads = data.get("loadavg_before", [])[:1] + data.get("loadavg_after", [])[:1]
    return (
        "| `bench_apply`: 1,000 VIFs on 500 VMs to `all-off`, 1 ms per XAPI "
        "call | %d calls: **%.2f per VIF** (6 keys + 1 book; %d per "
        "operation); revert ALL %d (%.2f per VIF: + the re-read before the "
        "removes, docs/policy.md \"Cost\"); writes over 8 sessions. Apply "
        "**%.2f s**, revert %.2f s (%s); the floor, a plugin start (%.2f s) "
        "and the same bare calls over 8 sessions from another process "
        "(%.2f s; through the XenAPI client %.2f s), is %.2f s: apply "
        "**%.2f×** it, revert %.2f×; the latency alone is %.3f s. vs "
        "`xe`-per-key %.0f s extrapolated from %d VIFs in that run: "
        "**%.0f×**%s | ≤ 7 calls per VIF + constant: met for apply, not "
        "for revert; ≤ %.1f s: %s; ≥ 20×: met |" % (
            mine["xapi_calls"], mine["calls_per_vif"],
            mine["constant_calls"], mine["revert_xapi_calls"],
            mine["revert_calls_per_vif"], mine["wall_s"],
            mine["revert_wall_s"], data["times_are"].split(" (")[0],
            mine["plugin_launch_s"], mine["measured_floor_s"],
            mine["measured_floor_xenapi_client_s"],
            mine["floor_with_launch_s"], mine["wall_over_floor_with_launch"],
            mine["revert_wall_over_floor_with_launch"], mine["floor_s"],
            data["original_scripts"]["wall_s"],
            data["original_scripts"]["measured_vifs"], data["speedup"],
            ", load average %.0f-%.0f" % (min(loads), max(loads))
            if loads else "", float(data["targets"]["wall_s"].split()[-1]),
            "met" if mine["wall_s"] <= float(
                data["targets"]["wall_s"].split()[-1])
            else "not met: the floor alone takes %.2f s of it" % (
                mine["floor_with_launch_s"])))


def bench_watch(data):
    lat, rss, targets = data["latency_ms"], data["rss_mib"], data["targets"]
    share = data["cpu_ms_per_event"] * data["rate_target"] / 1000.0
    resyncs = rss.get("after_resyncs_settled") or rss.get("after_resyncs")
    flat = max(resyncs) <= rss["max_during_load"]
    return (
        "| `bench_watch`: VIF.create → keys written at %.0f creates/s for %.0f "
        "s, %s VIFs in the pool, %.0f ms per XAPI call | %.1f creates/s "
        "reached, %d created, %d missed: from the simulator's commit of a "
        "VIF.create to that of its last key, p50 %.1f ms, p99 %.1f ms "
        "(seen by another event client: %.1f / %.1f ms) = **%.2f×** "
        "the floor of that run with a VIF's %.0f writes one after "
        "another at the simulator's median round trip (%.1f ms), %.1f× the "
        "floor with its keys at once (%.1f ms: the create's event, the book, "
        "the keys); **%.2f ms CPU per "
        "create** (%.0f %% of a core at %.0f/s); RSS %.1f MiB after the sync, "
        "%.1f MiB max as the pool grew to %s VIFs, %s MiB after %d resyncs; "
        "a resync after a master restart %.1f s (bench/results/"
        "watcher-round.md)%s | p99 ≤ %d ms: %s; CPU ≤ %.0f %%: %s; RSS ≤ %d "
        "MiB and flat: %s |" % (
            data["rate_target"], data["seconds"],
            "{:,}".format(data["pool_vifs"]), data["latency_ms_per_call"],
            data["rate_achieved"], data["created"], data["missing"],
            lat["p50"], lat["p99"],
            data["latency_seen_by_event_client_ms"]["p50"],
            data["latency_seen_by_event_client_ms"]["p99"],
            data["p99_over_floor"], data["writes_per_vif"], data["floor_ms"],
            lat["p99"] / data["floor_parallel_ms"], data["floor_parallel_ms"],
            data["cpu_ms_per_event"], share * 100,
            data["rate_target"], rss["after_sync"], rss["max_during_load"],
            "{:,}".format(data["pool_vifs"] + data["created"]),
            " / ".join("%.1f" % v for v in resyncs), len(resyncs),
            data["resync_after_restart_seconds"],
            ", load average %s at the end" % data["loadavg_at_end"][0]
            if data.get("loadavg_at_end") else "",
            targets["p99_ms"],
            "met" if lat["p99"] <= targets["p99_ms"] else
            "not met (%.1f× the floor)" % data["p99_over_floor"],
            targets["cpu_share"] * 100,
            "met in this run" if share <= targets["cpu_share"] else "not met",
            targets["rss_mib"],
            ("met" if rss["max_during_load"] <= targets["rss_mib"] else
             "flat, but %.1f MiB at %s VIFs" % (
                 rss["max_during_load"],
                 "{:,}".format(data["pool_vifs"] + data["created"])))
            if flat else "not flat"))


def bench_read(data):
    return (
        "| `bench_read`: read 8 features of %d veth devices | ioctl %.0f ms "
        "vs one `ethtool -k` per device %.2f s: **%.0f×** | ≥ %.0f× |" % (
            data["devices"], data["ioctl_seconds"] * 1000,
            data["ethtool_seconds"], data["speedup"], data["target"]))


ROWS = {"`bench_pack`": (bench_pack, "bench_pack"),
        "`bench_read`": (bench_read, "bench_read"),
        "`bench_watch`": (bench_watch, "bench_watch"),
        "`bench_apply`": (bench_apply, "bench_apply"),
        "`bench_udev`": (bench_udev, "bench_udev"),
        "`bench_boot`": (bench_boot, "bench_boot"),
        "`bench_poolbox`": (bench_poolbox, "bench_poolbox")}


def regenerate(text):
    """README text with every known row rebuilt; (new text, changed rows)."""
    lines = text.split("\n")
    changed = []
    for index, line in enumerate(lines):
        cells = [c.strip() for c in line.split("|")]
        name = cells[1].split(":")[0] if len(cells) > 2 else ""
        if name in ROWS:
            make, name = ROWS[name]
            row = make(_load(name))
            if row != line:
                changed.append((line, row))
                lines[index] = row
    return "\n".join(lines), changed


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(README) as handle:
        text = handle.read()
    new, changed = regenerate(text)
    if "--check" in argv:
        for old, row in changed:
            sys.stderr.write("README: %s\n  results: %s\n" % (old, row))
        return 1 if changed else 0
    if changed:
        with open(README, "w") as handle:
            handle.write(new)
    sys.stdout.write("%d row(s) regenerated\n" % len(changed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
