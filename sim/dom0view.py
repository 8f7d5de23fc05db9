"""A simulated host's dom0 file system, as the plugin and its tools see it.

xapi gives a plugin nothing but `PATH=/sbin:/usr/sbin:/bin:/usr/bin` and
stdin from /dev/null (ocaml/forkexecd/lib/forkhelpers.ml); everything else
the plugin finds at its dom0 path: the xapi socket /var/lib/xcp/xapi,
/etc/xensource-inventory, /var/lib/netoffload, the plugin itself in
/etc/xapi.d/plugins, python3 with XenAPI and XenAPIPlugin. Several simulated
hosts share this machine, so each plugin run gets a private mount namespace
(`unshare --mount`, private propagation, like sim/udevtest.py) in which the
host's own files are bind-mounted at those paths. A path that does not exist
on this machine needs a mount point: its nearest existing directory is
covered by an overlay whose upper layer lives on a tmpfs private to the
namespace, so nothing outside the namespace ever changes, and concurrent
runs for different hosts never see each other's files.
"""
import os
import subprocess

# $1: a directory for the namespace's scratch tmpfs; then triples
# (op, source, target) up to "--"; then the command.
_SETUP = r'''set -e
S=$1; shift
mount -t tmpfs -o mode=0700 netoffload-sim-dom0 "$S"
n=0
while [ "$1" != "--" ]; do
  op=$1; src=$2; dst=$3; shift 3
  case $op in
    overlay)
      n=$((n+1)); mkdir "$S/$n" "$S/$n/u" "$S/$n/w"
      mount -t overlay netoffload-sim-dom0 \
        -o "lowerdir=$dst,upperdir=$S/$n/u,workdir=$S/$n/w" "$dst";;
    dir) mkdir -p "$dst"; mount --bind "$src" "$dst";;
    file)
      if [ ! -e "$dst" ]; then mkdir -p "${dst%/*}"; : > "$dst"; fi
      mount --bind "$src" "$dst";;
    hide) rm -rf "$dst";;
  esac
done
shift
unset PWD OLDPWD  # the shell's; forkexecd execs the plugin with PATH only
exec "$@"
'''


def _existing_dir(path):
    """The nearest directory at or above path that exists here."""
    path = os.path.dirname(path)
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def plan(files):
    """The mount operations that show `files` ({dom0 path: source path, or
    None to make the dom0 path absent}): overlays first (outermost first),
    then binds and removals, parents before children."""
    overlays = set()
    steps = []
    for target in sorted(files, key=lambda p: (p.count("/"), p)):
        source = files[target]
        if source is not None and not os.path.exists(source):
            source = None  # nothing to show: absent, as in a dom0 without it
        if source is None:
            if os.path.lexists(target):
                overlays.add(_existing_dir(target))
            steps.append(("hide", "-", target))
            continue
        kind = "dir" if os.path.isdir(source) else "file"
        if not os.path.lexists(target) or (
                kind == "dir") != os.path.isdir(target):
            overlays.add(_existing_dir(target))
        steps.append((kind, source, target))
    ordered = [("overlay", "-", d) for d in sorted(
        overlays, key=lambda p: (p.count("/"), p))]
    return ordered + steps


def command(files, scratch, argv):
    """argv that runs `argv` with `files` in place (see plan)."""
    ops = []
    for step in plan(files):
        ops.extend(step)
    return (["unshare", "--mount", "--propagation", "private", "--",
             "sh", "-c", _SETUP, "sh", scratch] + ops + ["--"] + list(argv))


_PURELIB = {}


def purelib(interpreter):
    """Where `interpreter` imports system-wide pure-Python modules from."""
    if interpreter not in _PURELIB:
        out = subprocess.run(
            [interpreter, "-c",
             "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, timeout=30, check=True,
            env={"PATH": "/usr/bin:/bin"}).stdout
        _PURELIB[interpreter] = out.strip()
    return _PURELIB[interpreter]
