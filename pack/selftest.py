"""The RPM's %check: a self-test that needs only the standard library.

dom0 build hosts have no pytest, no root for network namespaces and maybe
no XenAPI, so this checks what can go wrong in packaging itself, against the
files installed in the build root:
- every module compiles and imports under this python3 (a module that needs
  XenAPI counts as checked when XenAPI is not installed here);
- netoffload.__version__ is the RPM's Version;
- every entry point puts the private path on sys.path and names a callable
  that exists;
- the plugin adds the private path too;
- `netoffload --version` runs.

Usage: python3 pack/selftest.py --buildroot DIR --version X.Y.Z [--allow-incomplete]
"""
import argparse
import ast
import os
import subprocess
import sys
import unittest

PYPRIVATE = "/usr/lib/netoffload/python"
ENTRY_POINTS = {
    "/usr/bin/netoffload": ("netoffload.cli", "main"),
    "/usr/libexec/netoffload/netoffload-udev": ("netoffload.agents.udev", "main"),
    "/usr/libexec/netoffload/netoffload-watch": ("netoffload.agents.watch", "main"),
    "/usr/libexec/netoffload/netoffload-boot": ("netoffload.agents.boot", "main"),
}
PLUGIN = "/etc/xapi.d/plugins/netoffload"
# Modules dom0 provides that a build host may lack.
DOM0_ONLY_MODULES = ("XenAPI", "XenAPIPlugin")

OPTIONS = argparse.Namespace(buildroot=None, version=None, allow_incomplete=False)


def _in_root(path):
    return os.path.join(OPTIONS.buildroot, path.lstrip("/"))


def _run_python(code, *argv):
    """Runs code in a fresh python3 that sees only the build root's package."""
    env = dict(os.environ, PYTHONPATH=_in_root(PYPRIVATE), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen([sys.executable, "-c", code] + list(argv), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def _module_names():
    top = _in_root(PYPRIVATE)
    names = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(top, "netoffload")):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for filename in sorted(filenames):
            if not filename.endswith(".py") or filename == "__main__.py":
                continue
            rel = os.path.relpath(os.path.join(dirpath, filename), top)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join(parts))
    return names


def _compile(path):
    """Raises SyntaxError unless this python3 compiles the file."""
    with open(path) as handle:
        compile(handle.read(), path, "exec")


def _string_constants(path):
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    found = set()
    for node in ast.walk(tree):
        kind = type(node).__name__  # Str up to 3.7, Constant from 3.8
        if kind == "Str":
            found.add(node.s)
        elif kind == "Constant" and isinstance(node.value, str):
            found.add(node.value)
    return found


_IMPORT_CHECK = """
import importlib, sys
name = sys.argv[1]
try:
    importlib.import_module(name)
except ImportError as err:
    if getattr(err, "name", None) in %r:
        print("needs-dom0:" + err.name)
        sys.exit(0)
    raise
print("ok")
""" % (DOM0_ONLY_MODULES,)


class PackageSelfTest(unittest.TestCase):

    def test_every_module_compiles(self):
        for name in _module_names():
            path = _in_root(PYPRIVATE) + "/" + name.replace(".", "/")
            path = path + "/__init__.py" if os.path.isdir(path) else path + ".py"
            with self.subTest(module=name):
                _compile(path)

    def test_every_module_imports(self):
        for name in _module_names():
            with self.subTest(module=name):
                code, out, err = _run_python(_IMPORT_CHECK, name)
                self.assertEqual(code, 0, err)
                if out.strip() != "ok":
                    sys.stderr.write("selftest: %s not imported here (%s)\n"
                                     % (name, out.strip()))

    def test_version_is_the_rpm_version(self):
        code, out, err = _run_python(
            "import netoffload; print(netoffload.__version__)")
        self.assertEqual(code, 0, err)
        self.assertEqual(out.strip(), OPTIONS.version)

    def test_entry_points_use_the_private_path(self):
        for path, (module, function) in sorted(ENTRY_POINTS.items()):
            with self.subTest(entry=path):
                installed = _in_root(path)
                self.assertTrue(os.access(installed, os.X_OK), installed)
                self.assertIn(PYPRIVATE, _string_constants(installed))
                module_file = _in_root(PYPRIVATE) + "/" + module.replace(".", "/") + ".py"
                if not os.path.exists(module_file) and OPTIONS.allow_incomplete:
                    continue
                code, out, err = _run_python(
                    "import importlib, sys\n"
                    "try:\n"
                    "    m = importlib.import_module(sys.argv[1])\n"
                    "except ImportError as err:\n"
                    "    if err.name in %r: sys.exit(0)\n"
                    "    raise\n"
                    "sys.exit(0 if callable(getattr(m, sys.argv[2], None)) else 3)\n"
                    % (DOM0_ONLY_MODULES,), module, function)
                self.assertEqual(code, 0, "%s: %s.%s missing\n%s" % (path, module, function, err))

    def test_plugin_adds_the_private_path(self):
        plugin = _in_root(PLUGIN)
        if not os.path.exists(plugin) and OPTIONS.allow_incomplete:
            self.skipTest("development build without the plugin")
        self.assertTrue(os.access(plugin, os.X_OK))
        _compile(plugin)
        self.assertIn(PYPRIVATE, _string_constants(plugin))

    def test_cli_reports_the_version(self):
        code, out, err = _run_python(
            "import sys; from netoffload.cli import main; sys.exit(main(['--version']))")
        self.assertEqual(code, 0, err)
        self.assertEqual(out.split(), ["netoffload", OPTIONS.version])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buildroot", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--allow-incomplete", action="store_true")
    parser.parse_args(argv, namespace=OPTIONS)
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(PackageSelfTest)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
