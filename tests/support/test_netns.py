import pytest

pytestmark = pytest.mark.root


def test_namespace_is_isolated_and_removed(netns):
    netns.add_veth("ethA", "ethB")
    assert {"lo", "ethA", "ethB"} <= set(netns.links())
    import socket
    with netns.entered():
        names = {name for _, name in socket.if_nameindex()}
    assert "ethA" in names
    assert "ethA" not in {name for _, name in socket.if_nameindex()}
