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


ROWS = {"`bench_pack`": (bench_pack, "bench_pack"),
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
