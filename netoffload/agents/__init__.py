"""What udev and systemd run in dom0: the udev helper (udev), the boot
pass (boot), the watcher daemon (watch) and the local cache they share.

The udev helper reads only the cache, never XAPI, and keeps its imports
few: its start-up time is measured.

May import: the top-level modules, engine/, pool/ and agents/ itself.
"""
