"""The exit codes of every netoffload command and helper, defined once.

- OK: done, or nothing to do;
- PARTIAL: some device, object or host failed, a diagnostic found
  something, or `status` found a non-compliant device;
- USAGE: bad argument, unknown name, ambiguous name, or a change that
  needs confirmation.

The udev helper always exits OK: a failing udev RUN program only fills
the journal, and the next bring-up tries again.
"""
OK = 0
PARTIAL = 1
USAGE = 2
