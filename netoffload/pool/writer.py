"""XAPI writes: carry out object plans, with lost races re-planned.

`apply_db(client, plans, clients)` -> per object: changed / unchanged / gone /
failed, the keys written. An object's writes stay in order on one session;
objects are spread over several sessions in parallel threads.
"""
import threading

from netoffload.errors import XapiError
from netoffload.log import get_logger
from netoffload.pool import xapi
from netoffload.pool.planning import replan
from netoffload.pool.xapi import LostRace, ObjectGone

MAX_RACE_RETRIES = 3


def _apply_one(client, plan):
    result = {"class": plan.cls, "uuid": plan.uuid, "label": plan.label,
              "written": [], "status": "unchanged"}
    for _attempt in range(MAX_RACE_RETRIES):
        try:
            for key, value, expected in plan.writes:
                client.set_other_config_key(plan.cls, plan.ref, key, value,
                                          expected)
                result["written"].append([key, value])
                result["status"] = "changed"
            break
        except LostRace as race:
            get_logger().info("%s %s: lost a race on other_config; re-planning",
                              plan.cls, plan.uuid)
            plan = replan(plan, race.other_config,
                           race.params[2] if len(race.params) > 2 else None)
        except ObjectGone:
            result["status"] = "gone"
            return result
        except XapiError as err:
            result["status"] = "failed"
            result["error"] = [err.message] + err.params
            return result
    else:
        result["status"] = "failed"
        result["error"] = ["lost %d races in a row" % MAX_RACE_RETRIES]
        return result
    result["live_only"] = plan.live_only
    result["reapplied_at_plug"] = plan.reapplied_at_plug
    result["desired"] = dict(plan.resolution.features)
    return result


def apply_db(client, plans, clients=None):
    """Carry out plans; [dict] per object with status changed / unchanged /
    gone / failed, the keys written, live-only wishes, reapplied_at_plug.

    `clients`: Xapi objects (one session each) to spread the objects over
    in parallel threads; an object's own writes stay in order on one client.
    """
    clients = list(clients or [client])
    if len(clients) == 1 or len(plans) < 2:
        return [_apply_one(clients[0], plan) for plan in plans]
    results = [None] * len(plans)
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
