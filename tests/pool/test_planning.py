"""Pure planning of database keys and their bookkeeping (no XAPI)."""
import pytest

from netoffload.errors import Ambiguous, NotFound
from netoffload.pool import enforce, keys, planning, targeting
from tests.support.poolrecords import build

SIX = ("rx", "tx", "sg", "tso", "ufo", "gso")
SIX_OFF = dict(("ethtool-" + f, "off") for f in SIX)
OP = "0123abcd"          # the op planning here writes under
OLD_OP = "feedbeef"      # an earlier op, finished (no op key on the pool)


def book(entries, op=OLD_OP, gen=1, taken=(), key="netoffload-book"):
    """{book key: text} holding {feature: [prior, value(, was)]}."""
    return {key: keys.Book(dict((f, keys.Entry(*(list(e) + [None])[:3]))
                                for f, e in entries.items()),
                           taken, op, gen).to_text()}


FRESH_BOOK = book(dict((f, (None, "off")) for f in SIX), op=OP)
DONE_BOOK = book(dict((f, (None, "off")) for f in SIX))
# The old two-key form, still read and migrated at the next write.
LEGACY_BOOK = {"netoffload-managed": "gso,rx,sg,tso,tx,ufo",
               "netoffload-saved": '{"gso":[null,"off"],"rx":[null,"off"],'
                                   '"sg":[null,"off"],"tso":[null,"off"],'
                                   '"tx":[null,"off"],"ufo":[null,"off"]}'}
# Written before the pack kept the value it wrote: prior values only.
OLDEST_BOOK = {"netoffload-managed": "gso,rx,sg,tso,tx,ufo",
               "netoffload-saved": '{"gso":null,"rx":null,"sg":null,'
                                   '"tso":null,"tx":null,"ufo":null}'}


def final_vif_config(records, force=False, op=OP):
    [plan] = planning.plan_db(records, ["OpaqueRef:vif"], force=force, op=op)
    return plan


def run_plan(config, plan):
    """Carry out plan.writes on a dict the way xapi would."""
    config = dict(config)
    for key, value, expected in plan.writes:
        assert config.get(key) == expected
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


PLAN_CASES = [
    ("no-policy-no-writes", {}, {}, {}),
    ("all-off-fresh-vif", {"netoffload-vif": "all-off"}, {"other": "x"},
     dict(SIX_OFF, other="x", **FRESH_BOOK)),
    ("explicit-off-kept",
     {"netoffload-vif": "tx=on"}, {"ethtool-tx": "false"},
     {"ethtool-tx": "false"}),
    # issue 11 item 1: Xen Orchestra's stamp is a default: the policy
    # applies over it and the stamp is saved for revert
    ("xo-stamp-overwritten-and-saved",
     {"netoffload-vif": "tx-off"}, {"ethtool-tx": "true"},
     dict({"ethtool-tx": "off"}, **book({"tx": ("true", "off")}, op=OP))),
    ("already-off-by-someone-else-untouched",
     {"netoffload-vif": "tx-off"}, {"ethtool-tx": "off"}, {"ethtool-tx": "off"}),
    ("policy-shrinks-restores-and-unmanages",
     {"netoffload-vif": "tx-off"},
     dict(SIX_OFF, **DONE_BOOK),
     dict({"ethtool-tx": "off"}, **book({"tx": (None, "off")}, op=OP, gen=2,
                                         key="netoffload-book.2"))),
    ("old-form-migrated-at-the-next-write",
     {"netoffload-vif": "tx-off"},
     dict(SIX_OFF, **LEGACY_BOOK),
     dict({"ethtool-tx": "off"}, **book({"tx": (None, "off")}, op=OP))),
    ("oldest-form-shrinks-too",
     {"netoffload-vif": "tx-off"},
     dict(SIX_OFF, **OLDEST_BOOK),
     dict({"ethtool-tx": "off"}, **book({"tx": (None, "off")}, op=OP))),
    ("policy-gone-removes-everything", {},
     dict(SIX_OFF, other="x", **DONE_BOOK), {"other": "x"}),
    ("saved-value-restored", {},
     dict({"ethtool-tx": "off"}, **book({"tx": ("true", "off")})),
     {"ethtool-tx": "true"}),
    ("managed-value-changed-by-policy", {"netoffload-vif": "tx=on"},
     dict({"ethtool-tx": "off"}, **book({"tx": (None, "off")})),
     dict({"ethtool-tx": "on"}, **book({"tx": (None, "on")}, op=OP, gen=3))),
    # Someone set or removed a key after the pack wrote it: theirs now,
    # and the book remembers it was their decision.
    ("admin-changed-managed-key-is-theirs-and-kept",
     {"netoffload-vif": "all-off"},
     dict(SIX_OFF, **dict(DONE_BOOK, **{"ethtool-tx": "on"})),
     dict(SIX_OFF, **dict({"ethtool-tx": "on"}, **book(
         dict((f, (None, "off")) for f in SIX if f != "tx"), op=OP, gen=2,
         taken=["tx"], key="netoffload-book.2")))),
    ("admin-removed-managed-key-policy-claims-it-afresh",
     {"netoffload-vif": "tx-off"},
     book({"tx": ("true", "off")}),
     dict({"ethtool-tx": "off"}, **book({"tx": (None, "off")}, op=OP, gen=2,
                                         key="netoffload-book.2"))),
    ("admin-changed-key-survives-policy-removal", {},
     dict({"ethtool-tx": "TRUE"}, **book({"tx": ("false", "off")})),
     {"ethtool-tx": "TRUE", "netoffload-book.2": book(
         {}, op=OP, gen=2, taken=["tx"])["netoffload-book"]}),
]


@pytest.mark.parametrize("pool,vif,expected", [c[1:] for c in PLAN_CASES],
                         ids=[c[0] for c in PLAN_CASES])
def test_plan_vif(pool, vif, expected):
    records = build(pool=pool, vif=vif)
    plan = final_vif_config(records)
    assert run_plan(vif, plan) == expected == plan.final


def test_plan_is_idempotent():
    records = build(pool={"netoffload-vif": "all-off"}, vif={"a": "b"})
    first = final_vif_config(records)
    records.vifs["OpaqueRef:vif"]["other_config"] = first.final
    assert final_vif_config(records, op="aaaabbbb").writes == []


def test_fresh_apply_costs_one_write_per_key_and_the_book_comes_first():
    plan = final_vif_config(build(pool={"netoffload-vif": "all-off"}))
    written = [k for k, _, _ in plan.writes]
    assert written[0] == "netoffload-book"
    assert len(written) == 7  # issue 15: 6 ethtool keys + 1 book write
    assert all(expected is None for _, _, expected in plan.writes)
    assert not plan.rereads


def test_the_intent_is_written_before_a_key_is_replaced():
    records = build(pool={"netoffload-vif": "tx=on"},
                    vif=dict({"ethtool-tx": "off"},
                             **book({"tx": ("true", "off")})))
    plan = final_vif_config(records)
    written = [(k, v) for k, v, _ in plan.writes]
    intent = book({"tx": ("true", "on", "off")}, op=OP, gen=2,
                  key="netoffload-book.2")
    # the new generation is added before the old one goes: never no book
    assert written == [("netoffload-book.2", intent["netoffload-book.2"]),
                       ("netoffload-book", None), ("ethtool-tx", "on"),
                       ("netoffload-book", book({"tx": ("true", "on")},
                                                op=OP, gen=3)[
                                                    "netoffload-book"]),
                       ("netoffload-book.2", None)]
    assert plan.rereads


def test_shrinking_writes_keys_before_the_book():
    plan = final_vif_config(build(vif=dict(SIX_OFF, **DONE_BOOK)))
    written = [k for k, _, _ in plan.writes]
    assert written[-1] == "netoffload-book"
    assert len(written) == 7


def test_force_saves_explicit_and_revert_restores_it():
    vif = {"ethtool-tx": "false", "unrelated": "1"}
    records = build(pool={"netoffload-vif": "tx=on"}, vif=vif)
    plan = final_vif_config(records, force=True)
    assert plan.final == dict({"ethtool-tx": "on", "unrelated": "1"},
                              **book({"tx": ("false", "on")}, op=OP))
    records.vifs["OpaqueRef:vif"]["other_config"] = plan.final
    [back] = planning.plan_revert(records, ["OpaqueRef:vif"], op="aaaabbbb")
    assert back.final == vif


def test_vif_gro_lro_are_live_only_and_not_written():
    records = build(pool={"netoffload-vif": "all-off"})
    plan = final_vif_config(records)
    assert plan.live_only == {"gro": "off", "lro": "off"}
    assert not any(k in plan.final for k in ("ethtool-gro", "ethtool-lro"))
    assert plan.reapplied_at_plug and not plan.reapplied_now


def test_pif_gets_all_eight_and_unrelated_keys_survive():
    records = build(pool={"netoffload-pif": "all-off"},
                    pif={"ethtool-autoneg": "off", "mtu": "9000"})
    [plan] = planning.plan_db(records, ["OpaqueRef:pif"], op=OP)
    assert sorted(k for k in plan.final if k.startswith("ethtool-")) == sorted(
        ["ethtool-%s" % f for f in ("rx", "tx", "sg", "tso", "ufo", "gso",
                                    "gro", "lro", "autoneg")])
    assert plan.final["mtu"] == "9000"


def test_revert_of_unmanaged_object_is_empty():
    records = build(vif={"ethtool-tx": "on"})
    assert [p.writes for p in planning.plan_revert(
        records, ["OpaqueRef:vif", "OpaqueRef:pif"])] == [[], []]


def test_replan_after_lost_race_respects_the_new_explicit_key():
    records = build(pool={"netoffload-vif": "tx=off,sg=off"})
    plan = final_vif_config(records)
    # someone set tx between our book and our add of ethtool-tx
    fresh = dict({"ethtool-tx": "on"}, **FRESH_BOOK)
    fresh = dict(fresh, **book({"tx": (None, "off"), "sg": (None, "off")},
                                op=OP))
    again = planning.replan(plan, fresh)
    final = run_plan(fresh, again)
    assert final == dict({"ethtool-tx": "on", "ethtool-sg": "off"}, **book(
        {"sg": (None, "off")}, op=OP, gen=2, taken=["tx"],
        key="netoffload-book.2"))


# -- the bookkeeping protocol: what a crash leaves, and what comes next --------

CRASH_STATES = [
    # (name, the VIF's map as a crashed op left it, the map after the
    #  next apply under tx-off, with no op key for OP any more / with it)
    ("book-written-key-not-yet",
     dict(book({"tx": ("true", "off")}, op=OP)), {"ethtool-tx": "true"}),
    ("mid-replace-key-absent",
     dict(book({"tx": ("true", "off")}, op=OP)), {}),
    ("key-written",
     dict({"ethtool-tx": "off"}, **book({"tx": ("true", "off")}, op=OP)),
     {"ethtool-tx": "off"}),
    ("change-not-yet",
     dict({"ethtool-tx": "on"}, **book({"tx": ("true", "off", "on")},
                                       op=OP)), {"ethtool-tx": "on"}),
]


@pytest.mark.parametrize("state,keys_now", [c[1:] for c in CRASH_STATES],
                         ids=[c[0] for c in CRASH_STATES])
def test_a_crashed_ops_half_done_write_is_the_packs_not_someone_elses(
        state, keys_now):
    """The op key of OP is still on the pool (it crashed): every state its
    write can leave is the pack's; the next apply settles it and then
    claims tx again, with the XO stamp still saved as the prior."""
    config = dict(state, **keys_now)
    records = build(pool={"netoffload-vif": "tx-off",
                          "netoffload-op:" + OP: "{}"}, vif=config)
    [plan] = planning.plan_db(records, ["OpaqueRef:vif"], op="99999999")
    final = run_plan(config, plan)
    assert final["ethtool-tx"] == "off"
    assert keys.read_book(final).entries == {
        "tx": keys.Entry("true", "off", None)}
    records.vifs["OpaqueRef:vif"]["other_config"] = final
    [back] = planning.plan_revert(records, ["OpaqueRef:vif"], op="77777777")
    assert run_plan(final, back) == {"ethtool-tx": "true"}


def test_the_same_state_with_the_op_finished_is_someone_elses_change():
    config = dict({"ethtool-tx": "true"}, **book({"tx": ("true", "off")},
                                                 op=OP))
    records = build(pool={"netoffload-vif": "tx-off"}, vif=config)
    [plan] = planning.plan_db(records, ["OpaqueRef:vif"], op="99999999")
    final = run_plan(config, plan)
    assert final["ethtool-tx"] == "true"
    assert keys.read_book(final).taken == {"tx"}


def test_normalising_a_crashed_op_keeps_each_key_as_it_stands():
    config = dict({"ethtool-tx": "off", "ethtool-rx": "on"}, **book(
        {"tx": (None, "off"), "sg": ("true", "off"),
         "rx": (None, "off", "on")}, op=OP))
    records = build(pool={"netoffload-op:" + OP: "{}"}, vif=config)
    assert planning.references(records, {OP}) == ["OpaqueRef:vif"]
    [plan] = planning.plan_normalise(records, ["OpaqueRef:vif"], "99999999")
    final = run_plan(config, plan)
    assert dict((k, v) for k, v in final.items()
                if k.startswith("ethtool-")) == {
        "ethtool-tx": "off", "ethtool-rx": "on", "ethtool-sg": "true"}
    book_now = keys.read_book(final)
    assert (book_now.op, book_now.entries) == ("99999999", {
        "tx": keys.Entry(None, "off", None),
        "rx": keys.Entry(None, "on", None)})


@pytest.mark.parametrize("book_text", [
    "{not json", '{"f":{"tx":["%s","off"]},"g":1,"op":null}' % ("A" * 10 ** 6),
])
def test_a_book_that_cannot_be_trusted_is_refused_and_left_alone(book_text):
    config = {"ethtool-tx": "off", "netoffload-book": book_text}
    records = build(vif=config)
    [back] = planning.plan_revert(records, ["OpaqueRef:vif"], op=OP)
    assert back.writes == [] and back.refused
    [plan] = planning.plan_db(build(pool={"netoffload-vif": "all-off"},
                                    vif=config), ["OpaqueRef:vif"], op=OP)
    assert plan.writes == [] and plan.refused


def test_legacy_saved_not_json_is_refused_not_taken_for_absent_priors():
    config = {"ethtool-tx": "off", "netoffload-managed": "tx",
              "netoffload-saved": "{not json"}
    [back] = planning.plan_revert(build(vif=config), ["OpaqueRef:vif"])
    assert back.writes == [] and back.problems == [
        "netoffload-saved is not JSON: the priors of tx are unknown"]


def two_vms(name_a="web", name_b="web"):
    records = build(tags=["bsd"])
    records.vms["OpaqueRef:vm2"] = dict(records.vms["OpaqueRef:vm"],
                                        uuid="vm2-uuid", name_label=name_b,
                                        tags=[])
    records.vms["OpaqueRef:vm"]["name_label"] = name_a
    records.vms["OpaqueRef:tpl"] = dict(records.vms["OpaqueRef:vm"],
                                        uuid="tpl-uuid", is_a_template=True)
    records.vifs["OpaqueRef:vif2"] = dict(records.vifs["OpaqueRef:vif"],
                                          uuid="vif2-uuid", VM="OpaqueRef:vm2")
    records.vifs["OpaqueRef:tplvif"] = dict(records.vifs["OpaqueRef:vif"],
                                            VM="OpaqueRef:tpl")
    return records


SELECT_CASES = [
    ("all", ("all", "ALL"), ["OpaqueRef:vif", "OpaqueRef:vif2"],
     ["OpaqueRef:pif"]),
    ("vm-by-uuid", ("vm", "vm2-uuid"), ["OpaqueRef:vif2"], []),
    ("vm-by-name", ("vm", "a b"), ["OpaqueRef:vif"], []),
    ("tag", ("tag", "bsd"), ["OpaqueRef:vif"], []),
    ("network", ("network", "LAN"), ["OpaqueRef:vif", "OpaqueRef:vif2"], []),
    ("pif", ("pif", "eth0"), [], ["OpaqueRef:pif"]),
]


@pytest.mark.parametrize("spec,vifs,pifs", [c[1:] for c in SELECT_CASES],
                         ids=[c[0] for c in SELECT_CASES])
def test_select(spec, vifs, pifs):
    selection = targeting.select(two_vms("a b", "c"), spec, "OpaqueRef:host")
    assert (sorted(selection.vifs), selection.pifs) == (vifs, pifs)


def test_select_ambiguous_lists_uuids():
    with pytest.raises(Ambiguous) as err:
        targeting.select(two_vms(), ("vm", "web"), "OpaqueRef:host")
    assert err.value.params == ["vm-uuid", "vm2-uuid"]


@pytest.mark.parametrize("spec", [("vm", "nope"), ("network", "nope"),
                                  ("pif", "eth9"), ("vm", "tpl-uuid")],
                         ids=["vm", "network", "pif", "template"])
def test_select_not_found(spec):
    with pytest.raises(NotFound):
        targeting.select(two_vms(), spec, "OpaqueRef:host")


def test_local_devices_names_guest_devices_like_dom0():
    records = build(pool={"netoffload-vif": "all-off"})
    devices = [(d.device, d.kind) for d in
               enforce.local_devices(records, "OpaqueRef:host")]
    assert devices == [("eth0", "pif"), ("vif5.0", "vif"), ("tap5.0", "tap")]
    records.vms["OpaqueRef:vm"]["resident_on"] = "OpaqueRef:other"
    assert [d.device for d in enforce.local_devices(
        records, "OpaqueRef:host")] == ["eth0"]


def test_local_devices_leave_out_sr_iov_vfs_and_the_logical_pif():
    """A VIF on an SR-IOV network is a VF in the guest (no vif/tap in
    dom0), and the logical PIF carries its NIC's name without being a
    device: neither is listed, so nothing is applied or reported twice."""
    records = build(pool={"netoffload-vif": "all-off",
                          "netoffload-pif": "all-off"})
    records.networks["OpaqueRef:vf-net"] = {
        "uuid": "vf-net", "name_label": "VF", "other_config": {}}
    records.pifs["OpaqueRef:logical"] = dict(
        records.pifs["OpaqueRef:pif"], uuid="logical",
        network="OpaqueRef:vf-net",
        sriov_logical_PIF_of=["OpaqueRef:sriov"])
    records.vifs["OpaqueRef:vf"] = dict(
        records.vifs["OpaqueRef:vif"], uuid="vf", device="1",
        network="OpaqueRef:vf-net")
    devices = [(d.device, d.kind) for d in
               enforce.local_devices(records, "OpaqueRef:host")]
    assert devices == [("eth0", "pif"), ("vif5.0", "vif"), ("tap5.0", "tap")]
    assert enforce.deviceless_pifs(records, "OpaqueRef:host") == []


def test_resolution_for_missing_ref_is_not_found():
    with pytest.raises(NotFound):
        planning.plan_db(build(), ["OpaqueRef:missing"])


def test_book_round_trips_through_the_reader():
    plan = final_vif_config(build(pool={"netoffload-vif": "all-off"},
                                  vif={"ethtool-rx": "on"}))
    entries = keys.read_book(plan.final).entries
    # rx=on found before netoffload is a default: claimed, saved
    assert entries == dict((f, keys.Entry("on" if f == "rx" else None, "off",
                                          None)) for f in SIX)


def test_pif_property_gro_wins_and_the_packs_ethtool_gro_goes():
    """Issue 11 item 6: networkd uses properties:gro only when there is no
    ethtool-gro key, so the pack's key must give way to an admin's
    `xe pif-param-set properties:gro=off`."""
    eight = ("rx", "tx", "sg", "tso", "ufo", "gso", "gro", "lro")
    config = dict(dict(("ethtool-" + f, "off") for f in eight),
                  **book(dict((f, (None, "off")) for f in eight)))
    records = build(pool={"netoffload-pif": "all-off"}, pif=config)
    records.pifs["OpaqueRef:pif"]["properties"] = {"gro": "off"}
    [plan] = planning.plan_db(records, ["OpaqueRef:pif"], op=OP)
    final = run_plan(config, plan)
    assert "ethtool-gro" not in final
    assert set(keys.read_book(final).entries) == set(eight) - {"gro"}
    assert plan.resolution.sources["gro"] == "property"


def test_oldest_form_with_a_value_the_pack_never_writes_is_theirs():
    config = {"ethtool-tx": "TRUE", "ethtool-sg": "off",
              "netoffload-managed": "tx,sg",
              "netoffload-saved": '{"tx":null,"sg":"true"}'}
    records = build(pool={"netoffload-vif": "sg=off"}, vif=config)
    final = run_plan(config, final_vif_config(records))
    book_now = keys.read_book(final)
    assert not book_now.problems
    assert (book_now.entries, book_now.taken) == (
        {"sg": keys.Entry("true", "off", None)}, {"tx"})
    assert final["ethtool-tx"] == "TRUE"


def test_force_never_takes_over_a_value_no_book_may_hold():
    config = {"ethtool-tx": "x" * 100}
    records = build(pool={"netoffload-vif": "tx-off,sg=off".replace(
        "tx-off,", "tx=off,")}, vif=config)
    final = run_plan(config, final_vif_config(records, force=True))
    assert final["ethtool-tx"] == "x" * 100
    assert keys.read_book(final).entries == {
        "sg": keys.Entry(None, "off", None)}
