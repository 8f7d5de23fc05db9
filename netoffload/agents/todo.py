"""The watcher's to-do: objects whose keys it could not write yet.

A key write that fails (xapi refusing connections while it restarts, a
reply cut short, SESSION_INVALID, or anything else) is never dropped: the
object goes on this list and the watcher plans and writes it again, with a
backoff per object (1 s doubling up to 60 s), until its keys land or the
object is gone. The list is kept in `todo.json` in the state directory,
written atomically whenever it changes, so it survives a watcher restart
and `status` / `doctor` can show how many objects are still waiting:

    read_todo(state_dir) -> Todo(count, entries)   (entries: [TodoEntry])

Format (version 1): {"version": 1, "objects": {ref: {"class", "uuid",
"label", "since", "attempts", "error"}}}; `since` is the unix time the
first failed write was seen.
"""
import collections
import errno
import json
import os

from netoffload import paths, statedir

TODO_FILE = "todo.json"
FORMAT_VERSION = 1
RETRY_INITIAL = 1.0
RETRY_MAX = 60.0

# One object waiting: its XAPI class and ref, uuid and label for people, the
# unix time its first failed write was seen, how many attempts failed, the
# last error.
TodoEntry = collections.namedtuple(
    "TodoEntry", "ref cls uuid label since attempts error")
# What read_todo returns: how many objects wait, and the entries (by since).
Todo = collections.namedtuple("Todo", "count entries")


def todo_path(state_dir=None):
    return os.path.join(paths.state_dir(state_dir), TODO_FILE)


def _entry(ref, raw):
    if not isinstance(raw, dict):
        return None
    try:
        return TodoEntry(str(ref), str(raw.get("class", "")),
                         str(raw.get("uuid", "")), str(raw.get("label", "")),
                         float(raw.get("since", 0.0)),
                         int(raw.get("attempts", 0)), str(raw.get("error", "")))
    except (TypeError, ValueError):
        return None


def _load(path):
    """{ref: TodoEntry}; {} when there is no file. A file that does not
    parse counts as empty: the watcher plans every object at start anyway
    (its full sync), so nothing is lost with it."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (IOError, OSError) as err:
        if err.errno == errno.ENOENT:
            return {}
        raise
    except ValueError:
        return {}
    objects = data.get("objects") if isinstance(data, dict) else None
    if not isinstance(objects, dict):
        return {}
    entries = {}
    for ref, raw in objects.items():
        entry = _entry(ref, raw)
        if entry is not None:
            entries[entry.ref] = entry
    return entries


def read_todo(state_dir=None):
    """The watcher's to-do as it last wrote it: Todo(count, entries), the
    entries oldest first. Todo(0, []) when there is none (no file) or it
    cannot be read (status must not fail for it)."""
    try:
        found = _load(todo_path(state_dir))
    except (IOError, OSError):
        found = {}
    entries = sorted(found.values(), key=lambda e: (e.since, e.ref))
    return Todo(len(entries), entries)


def retry_delay(attempts):
    """Seconds before the next try after `attempts` failed ones."""
    return min(RETRY_MAX, RETRY_INITIAL * (2 ** max(0, attempts - 1)))


class TodoList(object):
    """The watcher's side: entries, when each is due again, and the file.

    Pure apart from load() and save(); times are passed in (`now` is a
    monotonic time for due dates, `wall` a unix time for `since`).
    """

    def __init__(self, state_dir=None):
        self.path = todo_path(state_dir)
        self.entries = {}       # ref -> TodoEntry
        self._due = {}          # ref -> monotonic time it is due again
        self.changed = False    # entries differ from the file

    def load(self, now):
        """Read the file a previous watcher left: every entry is due now."""
        try:
            self.entries = _load(self.path)
        except (IOError, OSError):
            self.entries = {}
        self._due = dict((ref, now) for ref in self.entries)
        self.changed = False
        return len(self.entries)

    def __len__(self):
        return len(self.entries)

    def __contains__(self, ref):
        return ref in self.entries

    def failed(self, ref, cls, uuid, label, error, now, wall):
        """A write of ref failed: keep it, due again after its backoff."""
        old = self.entries.get(ref)
        attempts = (old.attempts if old else 0) + 1
        self.entries[ref] = TodoEntry(ref, cls, uuid, label,
                                      old.since if old else wall, attempts,
                                      error)
        self._due[ref] = now + retry_delay(attempts)
        self.changed = True

    def done(self, refs):
        """These objects are in policy (or gone): off the list."""
        for ref in refs:
            if self.entries.pop(ref, None) is not None:
                self.changed = True
            self._due.pop(ref, None)

    def due(self, now):
        """The refs whose retry is due; they stay on the list until a
        write lands (done) or fails again (failed)."""
        refs = [ref for ref, when in self._due.items() if when <= now]
        for ref in refs:
            self._due.pop(ref)
        return refs

    def next_due(self):
        """Monotonic time of the next retry, or None."""
        return min(self._due.values()) if self._due else None

    def clear(self):
        self.done(list(self.entries))

    def to_json(self):
        return {"version": FORMAT_VERSION, "objects": dict(
            (e.ref, {"class": e.cls, "uuid": e.uuid, "label": e.label,
                     "since": e.since, "attempts": e.attempts,
                     "error": e.error})
            for e in self.entries.values())}

    def save(self):
        """Write the file if the entries changed (atomically). OSError /
        DeviceError if it cannot be written; it is tried again at the next
        save."""
        if not self.changed:
            return False
        statedir.ensure(os.path.dirname(self.path))
        statedir.atomic_write(self.path, json.dumps(
            self.to_json(), indent=1, sort_keys=True) + "\n")
        self.changed = False
        return True
