"""Policy precedence (docs/policy.md) over plain records, table-driven."""
import pytest

from netoffload.engine.policy import PROFILES
from netoffload.pool import keys
from netoffload.pool.precedence import (
    all_policies,
    resolve_pif,
    resolve_vif,
    vif_level_rank,
    vif_levels,
)
from netoffload.pool.records import eligible_vifs, eligible_vms
from tests.support.poolrecords import build

ALL_OFF = PROFILES["all-off"]


VIF_CASES = [
    ("nothing-anywhere", {}, {}, {}, None, None),
    ("pool", dict(pool={"netoffload-vif": "all-off"}), ALL_OFF,
     dict((f, "pool") for f in ALL_OFF), "all-off", "pool"),
    ("network-beats-pool",
     dict(pool={"netoffload-vif": "all-off"},
          network={"netoffload-vif": "tx-off"}),
     {"tx": "off"}, {"tx": "network"}, "tx-off", "network"),
    ("tag-beats-network",
     dict(pool={"netoffload-tag:bsd": "tx=off,sg=off"},
          network={"netoffload-vif": "all-off"}, tags=["bsd"]),
     {"tx": "off", "sg": "off"}, {"tx": "tag:bsd", "sg": "tag:bsd"},
     "tx=off,sg=off", "tag:bsd"),
    # Tags combine per feature, off wins, whatever their names and order
    # (issue 11 item 3; the old rule took the first tag in sorted order).
    ("tags-combine-off-wins",
     dict(pool={"netoffload-tag:b": "tx-off", "netoffload-tag:c": "all-off"},
          tags=["c", "b", "a"]),
     ALL_OFF, dict((f, "tag:b" if f == "tx" else "tag:c") for f in ALL_OFF),
     "all-off", "tag:b"),
    ("tags-combine-off-beats-on",
     dict(pool={"netoffload-tag:a": "tx=on,sg=on",
                "netoffload-tag:z": "tx=off"}, tags=["a", "z"]),
     {"tx": "off", "sg": "on"}, {"tx": "tag:z", "sg": "tag:a"},
     "tx=off,sg=on", "tag:a"),
    ("tag-none-contributes-nothing",
     dict(pool={"netoffload-tag:a": "none", "netoffload-tag:z": "tx-off",
                "netoffload-vif": "all-off"}, tags=["z", "a"]),
     {"tx": "off"}, {"tx": "tag:z"}, "tx-off", "tag:z"),
    ("all-tags-none-is-none",
     dict(pool={"netoffload-tag:a": "none", "netoffload-tag:z": "none",
                "netoffload-vif": "all-off"}, tags=["z", "a"]),
     {}, {}, "none", "tag:a"),
    ("tag-without-policy-falls-through",
     dict(pool={"netoffload-vif": "tx-off"}, tags=["plain"]),
     {"tx": "off"}, {"tx": "pool"}, "tx-off", "pool"),
    ("vm-beats-tag",
     dict(pool={"netoffload-tag:bsd": "all-off"},
          vm={"netoffload-vif": "rx=off"}, tags=["bsd"]),
     {"rx": "off"}, {"rx": "vm"}, "rx=off", "vm"),
    ("vm-none-stops-search",
     dict(pool={"netoffload-vif": "all-off"}, vm={"netoffload-vif": "none"}),
     {}, {}, "none", "vm"),
    ("network-none-stops-search",
     dict(pool={"netoffload-vif": "all-off"},
          network={"netoffload-vif": "none"}),
     {}, {}, "none", "network"),
    ("explicit-off-wins-per-feature",
     dict(pool={"netoffload-vif": "tx=on,sg=off"},
          vif={"ethtool-tx": "false"}),
     {"tx": "off", "sg": "off"}, {"tx": "explicit", "sg": "pool"},
     "tx=on,sg=off", "pool"),
    # issue 11 item 1: an on/true found before netoffload is a default
    # (Xen Orchestra 6 stamps ethtool-tx=true on every VIF it creates)
    ("xo-stamp-is-a-default",
     dict(pool={"netoffload-vif": "tx=off,sg=off"},
          vif={"ethtool-tx": "true"}),
     {"tx": "off", "sg": "off"}, {"tx": "pool", "sg": "pool"},
     "tx=off,sg=off", "pool"),
    ("default-without-policy-stays-explicit",
     dict(vif={"ethtool-tx": "true"}), {"tx": "on"}, {"tx": "explicit"},
     None, None),
    ("changed-after-netoffload-wrote-it-is-a-decision",
     dict(pool={"netoffload-vif": "tx-off"},
          vif={"ethtool-tx": "on", "netoffload-book":
               '{"f":{"tx":[null,"off"]},"g":1,"op":"aaaaaaaa"}'}),
     {"tx": "on"}, {"tx": "explicit"}, "tx-off", "pool"),
    ("managed-key-is-not-explicit",
     dict(pool={"netoffload-vif": "tx-off"},
          vif={"ethtool-tx": "off", "ethtool-sg": "on",
               "netoffload-managed": "sg,tx",
               "netoffload-saved": '{"sg":null,"tx":null}'}),
     {"tx": "off"}, {"tx": "pool"}, "tx-off", "pool"),
    ("explicit-without-policy",
     dict(vif={"ethtool-gso": "false"}), {"gso": "off"}, {"gso": "explicit"},
     None, None),
    ("broken-policy-changes-nothing",
     dict(pool={"netoffload-vif": "all-off"}, vm={"netoffload-vif": "tx=of"}),
     {}, {}, None, "vm"),
]


@pytest.mark.parametrize("kw,features,sources,policy,level",
                         [c[1:] for c in VIF_CASES],
                         ids=[c[0] for c in VIF_CASES])
def test_resolve_vif(kw, features, sources, policy, level):
    resolution = resolve_vif(build(**kw), "OpaqueRef:vif")
    assert (resolution.features, resolution.sources, resolution.policy,
            resolution.level) == (features, sources, policy, level)


def test_vif_levels_come_in_precedence_order():
    records = build(pool={"netoffload-vif": "all-off",
                          "netoffload-tag:b": "tx-off",
                          "netoffload-tag:c": "all-off"},
                    vm={"netoffload-vif": "none"},
                    network={"netoffload-vif": "tx-off"}, tags=["c", "b"])
    groups = [[level for level, _, _ in group]
              for group in vif_levels(records, "OpaqueRef:vif")]
    assert groups == [["vm"], ["tag:b", "tag:c"], ["network"], ["pool"]]
    assert [vif_level_rank(g[0]) for g in groups] == [0, 1, 2, 3]


@pytest.mark.parametrize("tags", [["a", "b", "c"], ["c", "b", "a"],
                                  ["b", "c", "a"]])
def test_tag_combination_does_not_depend_on_tag_order(tags):
    records = build(pool={"netoffload-tag:a": "tx=on,gso=off",
                          "netoffload-tag:b": "none",
                          "netoffload-tag:c": "tx=off,sg=on"}, tags=tags)
    resolution = resolve_vif(records, "OpaqueRef:vif")
    assert resolution.features == {"tx": "off", "sg": "on", "gso": "off"}
    assert resolution.contributing == ["tag:a", "tag:c"]
    assert resolution.shadowed == [("tag:b", "none")]


def test_provenance_names_contributing_shadowed_and_overrides():
    records = build(pool={"netoffload-vif": "all-off"},
                    network={"netoffload-vif": "tx=off,sg=off"},
                    vif={"ethtool-sg": "false", "ethtool-rx": "true"})
    data = resolve_vif(records, "OpaqueRef:vif").provenance_json()
    assert data == {
        "sources": {"tx": "network", "sg": "explicit", "rx": "explicit"},
        "contributing": ["network"],
        "shadowed": [{"level": "pool", "policy": "all-off"}],
        "overrides": [{"feature": "sg", "value": "off", "source": "explicit",
                       "why": "ethtool-sg=false set before netoffload"}]}


def test_pif_property_gro_is_an_explicit_setting():
    records = build(pool={"netoffload-pif": "all-off"})
    records.pifs["OpaqueRef:pif"]["properties"] = {"gro": "off"}
    resolution = resolve_pif(records, "OpaqueRef:pif")
    assert resolution.sources["gro"] == "property"
    assert resolution.live_features == dict(
        (f, "off") for f in ALL_OFF if f != "gro")
    assert [o.to_json() for o in resolution.overrides] == [
        {"feature": "gro", "value": "off", "source": "property",
         "why": "PIF property gro=off"}]
    records.pifs["OpaqueRef:pif"]["properties"] = {"gro": "on"}  # default
    assert resolve_pif(records, "OpaqueRef:pif").sources["gro"] == "pool"


def test_broken_policy_is_reported():
    resolution = resolve_vif(build(vm={"netoffload-vif": "tx=of"}),
                               "OpaqueRef:vif")
    assert "tx=of" in resolution.error and "netoffload-vif" in resolution.error


def test_force_beats_explicit():
    records = build(pool={"netoffload-vif": "tx-off"},
                    vif={"ethtool-tx": "TRUE"})
    resolution = resolve_vif(records, "OpaqueRef:vif", force=True)
    assert (resolution.features, resolution.sources) == (
        {"tx": "off"}, {"tx": "force"})


PIF_CASES = [
    ("nothing", {}, {}, None),
    ("pool", dict(pool={"netoffload-pif": "tx-off"}), {"tx": "off"}, "pool"),
    ("vif-policy-does-not-touch-pifs", dict(pool={"netoffload-vif": "all-off"}),
     {}, None),
    ("host-beats-pool", dict(pool={"netoffload-pif": "all-off"},
                             host={"netoffload-pif": "gro=on"}),
     {"gro": "on"}, "host"),
    ("host-none", dict(pool={"netoffload-pif": "all-off"},
                       host={"netoffload-pif": "none"}), {}, "host"),
    ("explicit-wins", dict(pool={"netoffload-pif": "all-off"},
                           pif={"ethtool-lro": "on", "mtu": "9000"}),
     dict(ALL_OFF, lro="on"), "pool"),
]


@pytest.mark.parametrize("kw,features,level", [c[1:] for c in PIF_CASES],
                         ids=[c[0] for c in PIF_CASES])
def test_resolve_pif(kw, features, level):
    resolution = resolve_pif(build(**kw), "OpaqueRef:pif")
    assert (resolution.features, resolution.level) == (features, level)


ELIGIBLE_CASES = [
    ("guest", {}, ["OpaqueRef:vm"]),
    ("template", {"is_a_template": True}, []),
    ("snapshot", {"is_a_snapshot": True}, []),
    ("dom0", {"is_control_domain": True}, []),
    ("halted-guest", {"power_state": "Halted", "domid": "-1"},
     ["OpaqueRef:vm"]),
]


@pytest.mark.parametrize("extra,expected", [c[1:] for c in ELIGIBLE_CASES],
                         ids=[c[0] for c in ELIGIBLE_CASES])
def test_eligible_vms(extra, expected):
    records = build(vm_extra=extra)
    assert eligible_vms(records) == expected
    assert eligible_vifs(records) == (["OpaqueRef:vif"] if expected else [])


BOOK_CASES = [
    ("none", {}, {}, []),
    ("new-form", {"netoffload-book":
                  '{"f":{"tx":["true","off"]},"g":3,"op":"abcdef12"}'},
     {"tx": keys.Entry("true", "off", None)}, []),
    ("newer-generation-wins", {
        "netoffload-book": '{"f":{"tx":[null,"off"]},"g":3,"op":"abcdef12"}',
        "netoffload-book.2": '{"f":{"sg":[null,"off"]},"g":4,"op":"abcdef12"}'},
     {"sg": keys.Entry(None, "off", None)}, []),
    ("old-two-key-form", {"netoffload-managed": "tx, sg,bogus,,",
                          "netoffload-saved": '{"tx":"true","sg":[null,"off"]}'},
     {"tx": keys.Entry("true", None, None), "sg": keys.Entry(None, "off", None)},
     []),
    ("old-form-not-json", {"netoffload-managed": "tx",
                           "netoffload-saved": "{not json"},
     {}, ["netoffload-saved is not JSON: the priors of tx are unknown"]),
    ("book-not-json", {"netoffload-book": "[1]"}, {},
     ["netoffload-book is not a netoffload book"]),
    ("hostile-prior", {"netoffload-book": '{"f":{"tx":["%s","off"]},"g":1,'
                       '"op":null}' % ("x" * 100)}, {},
     ["netoffload-book: 'tx' holds a value xapi could not have held; "
      "refused"]),
]


@pytest.mark.parametrize("config,entries,problems",
                         [c[1:] for c in BOOK_CASES],
                         ids=[c[0] for c in BOOK_CASES])
def test_read_book(config, entries, problems):
    book = keys.read_book(config)
    assert (book.entries, book.problems) == (entries, problems)


def test_book_text_is_compact_and_sorted():
    book = keys.Book({"tx": keys.Entry(None, "off", None),
                      "gso": keys.Entry("true", "off", "on")}, {"sg"},
                     "abcdef12", 2)
    assert book.to_text() == ('{"f":{"gso":["true","off","on"],"tx":[null,'
                              '"off"]},"g":2,"op":"abcdef12","t":["sg"]}')
    assert keys.read_book({"netoffload-book": book.to_text()}).entries == \
        book.entries


def test_valid_priors_are_what_xapi_could_hold():
    assert keys.valid_prior(None) and keys.valid_prior("true")
    assert keys.valid_prior("x" * 64)
    assert not keys.valid_prior("x" * 65)
    assert not keys.valid_prior("a\nb") and not keys.valid_prior(5)


def test_all_policies_lists_every_level():
    records = build(pool={"netoffload-vif": "all-off", "netoffload-pif": "bad",
                          "netoffload-tag:bsd": "tx-off", "other": "x"},
                    host={"netoffload-pif": "none"},
                    network={"netoffload-vif": "tx-off"},
                    vm={"netoffload-vif": "none"})
    found = [(p.level, p.kind, p.name, p.policy, p.valid)
             for p in all_policies(records)]
    assert found == [
        ("pool", "pif", "", "bad", False),
        ("pool", "vif", "", "all-off", True),
        ("tag", "vif", "bsd", "tx-off", True),
        ("host", "pif", "h1", "none", True),
        ("network", "vif", "LAN", "tx-off", True),
        ("vm", "vif", "web 01", "none", True),
    ]


def test_host_liveness():
    records = build()
    assert records.host_is_live("OpaqueRef:host")
    records.host_metrics["OpaqueRef:hm"]["live"] = False
    assert not records.host_is_live("OpaqueRef:host")
    records.host_metrics["OpaqueRef:hm"]["live"] = True
    records.hosts["OpaqueRef:host"]["enabled"] = False  # maintenance mode
    assert records.host_is_live("OpaqueRef:host")
    records.host_metrics = None
    assert records.host_is_live("OpaqueRef:host")


def test_a_policy_entry_says_why_it_is_invalid_in_its_json():
    records = build(pool={"netoffload-pif": "tx=sideways"})
    (entry,) = all_policies(records)
    assert not entry.valid
    assert entry.to_json() == {
        "level": "pool", "kind": "pif", "uuid": entry.uuid, "name": "",
        "key": "netoffload-pif", "policy": "tx=sideways", "valid": False,
        "error": entry.error}
    assert "sideways" in entry.error
    assert "error" not in all_policies(build(pool={"netoffload-pif": "none"}))[0].to_json()
