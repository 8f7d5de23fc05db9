#!/usr/bin/env python3
"""How long `make rpm` / `make pack` take and how big the artefacts are.

Builds into a temporary directory (the repo's dist/ is left alone), three
times each, and reports the median wall time; then the sizes of the RPM, the
ISO and the installed tree. Prints a table and writes
bench/results/bench_pack.json.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_PY = os.path.join(ROOT, "pack", "build.py")
RUNS = 3


sys.path.insert(0, os.path.join(ROOT, "pack"))
import build  # noqa: E402


def timed_build(what, outdir, builddir, extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETOFFLOAD_")}
    start = time.monotonic()
    subprocess.run([sys.executable, BUILD_PY, what, "--outdir", outdir, "--builddir", builddir]
                   + extra, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=600)
    return time.monotonic() - start


def main():
    missing = build.missing_sources(ROOT)
    extra = ["--allow-incomplete"] if missing else []
    ver = build.read_version(ROOT)
    results = {"version": ver, "runs": RUNS, "incomplete_tree": bool(missing)}
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp:
        outdir, builddir = os.path.join(tmp, "dist"), os.path.join(tmp, "build")
        rpm_times = [timed_build("rpm", outdir, builddir, extra) for _ in range(RUNS)]
        # The first pack build also generates the throw-away dev key.
        first_pack = timed_build("pack", outdir, builddir, extra)
        pack_times = [timed_build("pack", outdir, builddir, extra) for _ in range(RUNS)]
        rpm = os.path.join(outdir, "netoffload-%s.rpm" % ver)
        iso = os.path.join(outdir, "netoffload-%s.iso" % ver)
        installed = int(subprocess.run(
            ["rpm", "-qp", "--nosignature", "--qf", "%{SIZE}", rpm], check=True,
            stdout=subprocess.PIPE, universal_newlines=True).stdout)
        results.update({
            "rpm_build_s_median": round(statistics.median(rpm_times), 3),
            "pack_build_s_first_with_keygen": round(first_pack, 3),
            "pack_build_s_median": round(statistics.median(pack_times), 3),
            "rpm_bytes": os.path.getsize(rpm),
            "iso_bytes": os.path.getsize(iso),
            "installed_bytes": installed,
        })
        subprocess.call(["gpgconf", "--homedir", os.path.join(builddir, "dev-gnupg"),
                         "--kill", "gpg-agent"], stderr=subprocess.DEVNULL)
    width = max(len(k) for k in results)
    for key, value in results.items():
        print("%-*s  %s" % (width, key, value))
    outdir = os.path.join(ROOT, "bench", "results")
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "bench_pack.json"), "w") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    shutil.which("rpmbuild") or sys.exit("rpmbuild missing: run tools/bootstrap")
    sys.exit(main())
