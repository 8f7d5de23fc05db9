"""The watcher's writer pool (watch.KeyWriters): writes run in its
threads, an object's write result or exception comes back through
finished(), and stop() cancels what has not started and waits for what
runs. The writes themselves are stubbed here (writer.apply_db is tested
in tests/pool and end to end in test_watch*.py)."""
import collections
import subprocess
import sys
import threading

import pytest

from netoffload.agents import watch
from tests.support.wait import wait_for

Plan = collections.namedtuple("Plan", "ref")


class Session(object):
    _session = "OpaqueRef:test-session"


class StubWriters(watch.KeyWriters):
    """KeyWriters whose write of a plan is `behaviour(plan)`."""

    def __init__(self, behaviour, size):
        watch.KeyWriters.__init__(self, Session, size)
        self.behaviour = behaviour
        self.started = []

    def _write_one(self, plan):
        self.started.append(plan.ref)
        return self.behaviour(plan)


def collect(writers, count):
    done = []
    wait_for(lambda: done.extend(writers.finished()) or len(done) >= count,
             timeout=10)
    return done


def test_results_and_exceptions_come_back_once_each():
    def behaviour(plan):
        if plan.ref == "bad":
            raise ValueError("boom")
        return "wrote " + plan.ref

    writers = StubWriters(behaviour, size=3)
    try:
        plans = [Plan("a"), Plan("bad"), Plan("c")]
        writers.submit(plans)
        assert writers.in_flight() == {"a", "bad", "c"}
        done = dict((ref, (plan, outcome))
                    for ref, plan, outcome in collect(writers, 3))
        assert sorted(done) == ["a", "bad", "c"]
        assert done["a"][0] is plans[0]
        assert done["a"][1].result() == "wrote a"
        assert done["c"][1].result() == "wrote c"
        with pytest.raises(ValueError, match="boom"):
            done["bad"][1].result()
        assert writers.in_flight() == set()
        assert writers.finished() == []
        assert len(writers._threads) <= 3
    finally:
        writers.stop()
        writers.close()


def test_stop_cancels_the_writes_not_started_and_waits_for_the_running():
    release = threading.Event()
    running = threading.Event()

    def behaviour(plan):
        running.set()
        assert release.wait(10)
        return "wrote " + plan.ref

    writers = StubWriters(behaviour, size=1)
    writers.submit([Plan("first"), Plan("second"), Plan("third")])
    assert running.wait(10)
    stopper = threading.Thread(target=writers.stop)
    stopper.start()
    stopper.join(0.3)
    assert stopper.is_alive()  # waits for the running write
    release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    done = dict((ref, outcome) for ref, _plan, outcome in writers.finished())
    assert writers.started == ["first"]
    assert done["first"].result() == "wrote first"
    assert done["second"] is None and done["third"] is None
    assert all(not t.is_alive() for t in threading.enumerate()
               if t.name == "netoffload-writer")
    writers.close()


def test_the_watcher_loads_no_concurrent_futures_logging_or_typing():
    # each about 0.1-0.5 MiB of the watcher's RSS (issue 15: <= 35 MiB)
    code = ("import sys, netoffload.agents.watch; print(' '.join(sorted("
            "m for m in ('concurrent.futures', 'logging', 'typing', "
            "'random') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], check=True,
                         stdout=subprocess.PIPE, timeout=60,
                         universal_newlines=True).stdout
    assert out.strip() == ""
