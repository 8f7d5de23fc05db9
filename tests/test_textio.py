"""netoffload.textio: argv and stdio as UTF-8 on an ASCII locale.

The conditions of a Python 3.6 dom0 under xapi, udev or systemd (no LANG):
argv decoded as ASCII with surrogates, stdout encoding ASCII. On 3.7+ the
same is forced with LC_ALL=C, PYTHONUTF8=0 and PYTHONCOERCECLOCALE=0. Each
entry point (the CLI, the udev helper, boot, the watcher, the pack's entry
scripts) calls utf8_process() first.
"""
import subprocess
import sys

import pytest

from tests.support import layout
from tests.support.tools import interpreter

NAME = "caf\u00e9 \u2615"
SCRIPT = r'''
import sys
sys.path.insert(0, %r)
from netoffload import textio
%s
sys.stdout.write(sys.argv[1] + " " + u"d\u00e9j\u00e0\n")
'''
ASCII_ENV = {"PATH": "/sbin:/usr/sbin:/bin:/usr/bin", "LC_ALL": "C",
             "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}


def pythons():
    found = [sys.executable]
    for minor in ("3.6", "3.12"):
        path = interpreter(minor)
        if path:
            found.append(path)
    return found


def run(python, fix):
    code = SCRIPT % (layout.REPO, "textio.utf8_process()" if fix else "")
    return subprocess.run([python, "-c", code, NAME.encode("utf-8")],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=ASCII_ENV, timeout=30)


@pytest.mark.parametrize("python", pythons())
def test_utf8_process_makes_argv_and_stdout_utf8(python):
    proc = run(python, fix=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode("utf-8") == NAME + " d\u00e9j\u00e0\n"


@pytest.mark.parametrize("python", pythons())
def test_without_it_the_locale_breaks_output(python):
    """Control: the conditions are real (an ASCII stdout)."""
    proc = run(python, fix=False)
    assert proc.returncode != 0
    assert b"UnicodeEncodeError" in proc.stderr


def test_invalid_utf8_survives_as_escapes():
    code = SCRIPT % (layout.REPO, "textio.utf8_process()")
    proc = subprocess.run([sys.executable, "-c", code, b"bad\xff"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=ASCII_ENV, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode("utf-8") == "bad\\udcff d\u00e9j\u00e0\n"
