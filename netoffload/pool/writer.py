"""XAPI writes: carry out object plans, with lost races re-planned.

`apply_db(client, plans, clients)` -> [ObjectWrite] per object: changed /
unchanged / gone / failed, the keys written. An object's writes stay in
order on one session; objects are spread over several sessions in parallel
threads.
"""
import threading
from typing import List, Optional  # noqa: F401 (type comments)

from netoffload.errors import XapiError
from netoffload.log import get_logger
from netoffload.pool import xapi
from netoffload.pool.planning import ObjectPlan, replan  # noqa: F401
from netoffload.pool.xapi import LostRace, ObjectGone

MAX_RACE_RETRIES = 3

# ObjectWrite.status
STATUS_UNCHANGED = "unchanged"
STATUS_CHANGED = "changed"
STATUS_GONE = "gone"
STATUS_FAILED = "failed"


class ObjectWrite(object):
    """What writing one object's plan did: its status, the (key, value)
    pairs written in order, the error of a failed write, and the plan as
    finally carried out (None when the writes did not finish)."""
    __slots__ = ("cls", "uuid", "label", "status", "written", "error",
                 "done_plan")

    def __init__(self, plan):
        self.cls = plan.cls
        self.uuid = plan.uuid
        self.label = plan.label
        self.status = STATUS_UNCHANGED
        self.written = []
        self.error = None
        self.done_plan = None  # type: Optional[ObjectPlan]

    @classmethod
    def failed(cls, plan, error):
        """A write of `plan` that failed with `error` [message, params...]."""
        result = cls(plan)
        result.fail(error)
        return result

    def fail(self, error):
        self.status = STATUS_FAILED
        self.error = list(error)

    def to_json(self):
        entry = {"class": self.cls, "uuid": self.uuid, "label": self.label,
                 "written": [[k, v] for k, v in self.written],
                 "status": self.status}
        if self.error is not None:
            entry["error"] = list(self.error)
        if self.done_plan is not None:
            entry["live_only"] = self.done_plan.live_only
            entry["reapplied_at_plug"] = self.done_plan.reapplied_at_plug
            entry["desired"] = dict(self.done_plan.resolution.features)
        return entry

    def __repr__(self):
        return "ObjectWrite(%s %s: %s)" % (self.cls, self.uuid, self.status)


def _apply_one(client, plan):
    result = ObjectWrite(plan)
    for _attempt in range(MAX_RACE_RETRIES):
        try:
            for key, value, expected in plan.writes:
                client.set_other_config_key(plan.cls, plan.ref, key, value,
                                            expected)
                result.written.append((key, value))
                result.status = STATUS_CHANGED
            break
        except LostRace as race:
            get_logger().info("%s %s: lost a race on other_config; re-planning",
                              plan.cls, plan.uuid)
            plan = replan(plan, race.other_config,
                          race.params[2] if len(race.params) > 2 else None)
        except ObjectGone:
            result.status = STATUS_GONE
            return result
        except XapiError as err:
            result.fail([err.message] + err.params)
            return result
    else:
        result.fail(["lost %d races in a row" % MAX_RACE_RETRIES])
        return result
    result.done_plan = plan
    return result


def apply_db(client, plans, clients=None):
    """Carry out plans; [ObjectWrite] per object with status changed /
    unchanged / gone / failed, the keys written and the plan carried out.

    `clients`: Xapi objects (one session each) to spread the objects over
    in parallel threads; an object's own writes stay in order on one client.
    """
    clients = list(clients or [client])
    if len(clients) == 1 or len(plans) < 2:
        return [_apply_one(clients[0], plan) for plan in plans]
    results = [None] * len(plans)  # type: List[Optional[ObjectWrite]]
    indexes = iter(range(len(plans)))
    take = threading.Lock()

    def work(client):
        while True:
            with take:
                index = next(indexes, None)
            if index is None:
                return
            results[index] = _apply_one(client, plans[index])
    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join()
    return results


# Database writes for many objects are spread over this many sessions.
DB_SESSIONS = 4


PARALLEL_MIN_OBJECTS = 32


def write_plans(ctx, plans):
    """apply_db, in parallel sessions when there is much to do."""
    extra = []
    if sum(1 for p in plans if p.changes) >= PARALLEL_MIN_OBJECTS:
        for _ in range(DB_SESSIONS - 1):
            try:
                extra.append(xapi.Xapi(xapi.open_session()))
            except XapiError as err:
                get_logger().info("writing with fewer sessions: %s",
                                  err.message)
                break
    try:
        return apply_db(ctx.xapi, plans, [ctx.xapi] + extra)
    finally:
        for client in extra:
            xapi.close_session(client.session)
            ctx.xapi.calls += client.calls + 2  # + login and logout
