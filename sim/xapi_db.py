"""The simulator's object database: rows, generations, relations, persistence.

It follows xapi's database model where clients can see it:
- every write bumps a global generation counter and stamps the row with it
  (ctime when created, mtime when modified); event.from reports rows whose
  stamp is newer than the caller's token;
- deleted rows are remembered (with their creation stamp) in memory only, so
  a restart forgets them, as xapi does;
- one-to-many relations (VIF.VM <-> VM.VIFs, ...) are kept in step, and the
  parent row is stamped as modified when a child joins or leaves.

event.from cost follows the number of changes since the token, not the
size of the database: every stamp is also appended to a change log ordered
by generation, which changes_since bisects (xapi's own scan over its tables
is native code and cheap; a Python scan over 10,000 rows under the one
database lock would make the simulator the bottleneck of any benchmark).

Persistence: a JSON snapshot plus an append-only journal (one JSON line per
row write or delete). A process killed with SIGKILL loses nothing that a
call had already returned; loading replays the journal and compacts it.
"""
import bisect
import collections
import json
import os
import threading
import uuid as uuidlib

from sim import xapi_schema as schema
from sim.xapi_errors import ApiError

# Remembered deletions for event.from; older ones are forgotten as xapi's
# database GC does, and a client with an older token silently misses them.
MAX_DELETED = 100000


def new_ref():
    return "OpaqueRef:%s" % uuidlib.uuid4()


class Database(object):
    def __init__(self):
        self.lock = threading.Condition(threading.RLock())
        self.tables = dict((cls, {}) for cls in schema.CLASSES)
        self.stamps = {}  # ref -> [ctime, mtime]
        self.by_uuid = dict((cls, {}) for cls in schema.CLASSES)
        self.deleted = collections.deque(maxlen=MAX_DELETED)
        self.generation = 0
        # change log: generations (ascending) and the (cls, ref) stamped then
        self._log_gens = []
        self._log_items = []
        self._path = None
        self._journal_file = None

    # -- reading -------------------------------------------------------------
    def exists(self, cls, ref):
        return ref in self.tables[cls]

    def row(self, cls, ref):
        """The live record (do not mutate); HANDLE_INVALID when absent."""
        try:
            return self.tables[cls][ref]
        except (KeyError, TypeError):
            raise ApiError("HANDLE_INVALID", cls, ref) from None

    def ref_of_uuid(self, cls, uuid):
        try:
            return self.by_uuid[cls][uuid]
        except (KeyError, TypeError):
            raise ApiError("UUID_INVALID", cls, uuid) from None

    def class_of_ref(self, ref):
        for cls, table in self.tables.items():
            if ref in table:
                return cls
        return None

    # -- writing -------------------------------------------------------------
    def _bump(self):
        self.generation += 1
        return self.generation

    def create(self, cls, fields, ref=None):
        """Insert a record (defaults filled in) and return its ref."""
        rec = schema.default_record(cls)
        for name, value in fields.items():
            if name not in rec:
                raise ValueError("%s has no field %s" % (cls, name))
            rec[name] = value
        if not rec.get("uuid"):
            rec["uuid"] = str(uuidlib.uuid4())
        fresh = not ref  # a new ref is in no parent's set yet
        ref = ref or new_ref()
        gen = self._bump()
        self.tables[cls][ref] = rec
        self.stamps[ref] = [gen, gen]
        self._logged(cls, ref, gen)
        self.by_uuid[cls][rec["uuid"]] = ref
        for child, cfield, parent, pfield in schema.RELATIONS:
            if child == cls:
                self._link(parent, rec[cfield], pfield, ref, True, fresh)
        self._journal_row(cls, ref)
        self.lock.notify_all()
        return ref

    def set_field(self, cls, ref, field, value):
        rec = self.row(cls, ref)
        old = rec[field]
        for child, cfield, parent, pfield in schema.RELATIONS:
            if child == cls and cfield == field and old != value:
                self._link(parent, old, pfield, ref, False)
                self._link(parent, value, pfield, ref, True)
        rec[field] = value
        self.stamps[ref][1] = self._bump()
        self._logged(cls, ref, self.generation)
        self._journal_row(cls, ref)
        self.lock.notify_all()

    def destroy(self, cls, ref):
        rec = self.row(cls, ref)
        for child, cfield, parent, pfield in schema.RELATIONS:
            if child == cls:
                self._link(parent, rec[cfield], pfield, ref, False)
        del self.tables[cls][ref]
        self.by_uuid[cls].pop(rec["uuid"], None)
        ctime = self.stamps.pop(ref)[0]
        gen = self._bump()
        self.deleted.append((cls, ref, ctime, gen))
        if cls not in schema.TRANSIENT_CLASSES:
            self._write_journal({"op": "del", "cls": cls, "ref": ref})
        self.lock.notify_all()

    def _link(self, parent_cls, parent_ref, field, child_ref, add,
              fresh=False):
        table = self.tables[parent_cls]
        if parent_ref not in table:
            return  # NULL or dangling: xapi keeps no back-pointer either
        members = table[parent_ref][field]
        # `fresh`: a ref just made, so no scan of a network's 10,000 VIFs
        if add and (fresh or child_ref not in members):
            members.append(child_ref)
        elif not add and child_ref in members:
            members.remove(child_ref)
        else:
            return
        self.stamps[parent_ref][1] = self._bump()
        self._logged(parent_cls, parent_ref, self.generation)
        # Derived sets are rebuilt on load: journal only the new stamp, so a
        # write stays O(1) however many VIFs a network has.
        self._write_journal({"op": "stamp", "ref": parent_ref,
                             "stamp": self.stamps[parent_ref]})

    # -- events ----------------------------------------------------------------
    def changes_since(self, since, tables, object_filter):
        """(add, mod, del) lists of (cls, ref, stamp) newer than `since`.

        Like xapi, an object both created and modified since the token is one
        `add`; one created and deleted since then is not reported at all.
        """
        adds, mods, dels = [], [], []
        wanted = set(tables)
        seen = set()
        start = bisect.bisect_right(self._log_gens, since)
        for index in range(len(self._log_items) - 1, start - 1, -1):
            cls, ref = self._log_items[index]
            if ref in seen:
                continue
            seen.add(ref)
            if cls not in wanted or ref not in self.tables[cls] \
                    or not object_filter(cls, ref):
                continue  # deleted rows are reported from self.deleted
            ctime, mtime = self.stamps[ref]
            if ctime > since:
                adds.append((cls, ref, ctime))
            elif mtime > since:
                mods.append((cls, ref, mtime))
        for cls, ref, ctime, dtime in reversed(self.deleted):
            if dtime <= since:
                break  # appended in generation order
            if ctime <= since and cls in wanted and object_filter(cls, ref):
                dels.append((cls, ref, dtime))
        return adds, mods, dels

    def _logged(self, cls, ref, gen):
        self._log_gens.append(gen)
        self._log_items.append((cls, ref))
        if len(self._log_gens) > 4 * len(self.stamps) + 10000:
            self._rebuild_log()

    def _rebuild_log(self):
        """The change log from the stamps: one entry per row, by mtime."""
        entries = sorted((self.stamps[ref][1], cls, ref)
                         for cls, rows in self.tables.items() for ref in rows)
        self._log_gens = [gen for gen, _, _ in entries]
        self._log_items = [(cls, ref) for _, cls, ref in entries]

    def touch(self, cls, ref):
        """Stamp a row as modified without changing it (event.inject)."""
        self.row(cls, ref)
        self.stamps[ref][1] = self._bump()
        self._logged(cls, ref, self.generation)
        self._journal_row(cls, ref)
        self.lock.notify_all()

    def counts(self):
        return dict((cls.lower(), len(rows)) for cls, rows in self.tables.items())

    # -- persistence -------------------------------------------------------------
    def snapshot(self, include_sessions=False):
        """A deep copy: {class: {ref: record}}."""
        out = {}
        for cls, rows in self.tables.items():
            if cls in schema.TRANSIENT_CLASSES and not include_sessions:
                continue
            out[cls] = json.loads(json.dumps(rows))
        return out

    def _journal_row(self, cls, ref):
        if cls not in schema.TRANSIENT_CLASSES and \
                self._journal_file is not None:
            rec = self.tables[cls][ref]
            self._write_journal({"op": "put", "cls": cls, "ref": ref,
                                 "rec": dict((k, v) for k, v in rec.items()
                                             if (cls, k) not in schema.DERIVED),
                                 "stamp": self.stamps[ref]})

    def _write_journal(self, entry):
        if self._journal_file is None:
            return
        self._journal_file.write(json.dumps(entry, sort_keys=True) + "\n")
        self._journal_file.flush()

    def attach(self, path):
        """Load `path` (+ its journal) if present, compact, then journal writes."""
        self._path = path
        if os.path.exists(path):
            with open(path) as fh:
                data = json.load(fh)
            self.generation = max(self.generation, data.get("generation", 0))
            for cls, rows in data.get("tables", {}).items():
                for ref, item in rows.items():
                    self._load_row(cls, ref, item["rec"], item["stamp"])
        journal_path = path + ".journal"
        if os.path.exists(journal_path):
            with open(journal_path) as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        break  # a torn last line from a kill mid-write
                    if entry["op"] == "put":
                        self._load_row(entry["cls"], entry["ref"],
                                       entry["rec"], entry["stamp"])
                    elif entry["op"] == "stamp":
                        if entry["ref"] in self.stamps:
                            self.stamps[entry["ref"]] = list(entry["stamp"])
                            self.generation = max(self.generation,
                                                  entry["stamp"][1])
                    elif entry["cls"] in self.tables:
                        rec = self.tables[entry["cls"]].pop(entry["ref"], None)
                        if rec is not None:
                            self.by_uuid[entry["cls"]].pop(rec["uuid"], None)
                            self.stamps.pop(entry["ref"], None)
        self._rebuild_relations()
        self._rebuild_log()
        self.compact()

    def _rebuild_relations(self):
        """Derive the parent-side sets (VM.VIFs, ...) from the child rows."""
        for _, _, parent, field in schema.RELATIONS:
            for rec in self.tables[parent].values():
                rec[field] = []
        for child, cfield, parent, pfield in schema.RELATIONS:
            rows = sorted(self.tables[child].items(),
                          key=lambda item: self.stamps[item[0]][0])
            for ref, rec in rows:
                owner = self.tables[parent].get(rec[cfield])
                if owner is not None:
                    owner[pfield].append(ref)

    def _load_row(self, cls, ref, rec, stamp):
        full = schema.default_record(cls)
        full.update(rec)
        old = self.tables[cls].get(ref)
        if old is not None:
            self.by_uuid[cls].pop(old["uuid"], None)
        self.tables[cls][ref] = full
        self.by_uuid[cls][full["uuid"]] = ref
        self.stamps[ref] = list(stamp)
        self.generation = max(self.generation, stamp[0], stamp[1])

    def compact(self):
        """Write the snapshot atomically and start an empty journal."""
        if self._path is None:
            return
        self.detach_journal()
        data = {"generation": self.generation, "tables": {}}
        for cls, rows in self.tables.items():
            if cls in schema.TRANSIENT_CLASSES:
                continue
            data["tables"][cls] = dict(
                (ref, {"rec": rec, "stamp": self.stamps[ref]})
                for ref, rec in rows.items())
        tmp = self._path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh, sort_keys=True)
        os.rename(tmp, self._path)
        self._journal_file = open(self._path + ".journal", "w")

    def detach_journal(self):
        if self._journal_file is not None:
            self._journal_file.close()
            self._journal_file = None
