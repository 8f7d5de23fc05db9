#!/usr/bin/env python3
"""README's benchmark rows, regenerated from bench/results/*.json.

    tools/readme_figures.py          rewrite the rows in README.md
    tools/readme_figures.py --check  exit 1 (and show the rows) when the
                                     README differs from the results

Only rows this script knows are touched: each is found by its first cell
(`bench_pack`, `bench_poolbox`) and rebuilt from its JSON, so a figure in
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
    return ("| `bench_poolbox` | 3-host box built in %.2f s; whole demo story "
            "%.1f s | none |" % (data["build"]["3"]["build_s_median"],
                                 data["story"]["seconds"]))


ROWS = {"`bench_pack`": (bench_pack, "bench_pack"),
        "`bench_poolbox`": (bench_poolbox, "bench_poolbox")}


def regenerate(text):
    """README text with every known row rebuilt; (new text, changed rows)."""
    lines = text.split("\n")
    changed = []
    for index, line in enumerate(lines):
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and cells[1] in ROWS:
            make, name = ROWS[cells[1]]
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
