"""Waiting for something another process does, with a bound."""
import time


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    """predicate()'s first true value; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(interval)
