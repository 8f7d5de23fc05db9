"""The simulator as a separate process: CLI, sim.* admin API, and a database
that survives SIGKILL (the watcher tests kill it mid-burst)."""
import json
import os
import signal
import subprocess
import sys
import xmlrpc.client

import pytest
import XenAPI

from sim.xapi_db import Database
from sim.xapi_sim import REPO_ROOT, SimClient, SimError


class SimProcess(object):
    def __init__(self, sock_dir):
        self.socket_path = os.path.join(sock_dir, "xapi.sock")
        self.db = os.path.join(sock_dir, "db.json")
        self.state = os.path.join(sock_dir, "state")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sim.xapi_sim", "--socket", self.socket_path,
             "--port", "0", "--db", self.db, "--state-root", self.state],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, universal_newlines=True)
        self.info = json.loads(self.proc.stdout.readline())
        return self

    def stop(self, signum):
        self.proc.send_signal(signum)
        return self.proc.wait(10)

    def session(self):
        client = XenAPI.Session("http://%s/" % self.socket_path.replace("/", "_"),
                                transport=XenAPI.UDSTransport())
        client.login_with_password("root", "")
        return client


@pytest.fixture
def sim_process(sock_dir):
    process = SimProcess(sock_dir)
    yield process
    if process.proc and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(10)


def test_admin_api_and_state_survive_sigkill(sim_process):
    sim_process.start()
    assert sim_process.info["socket"] == sim_process.socket_path
    admin = SimClient(socket_path=sim_process.socket_path)
    host = admin.add_host(name_label="host1")
    net = admin.add_network(name_label="net0")
    vm = admin.add_vm(name_label="web01", power_state="Running", tags=["pfsense"])
    vif = admin.add_vif(vm=vm, network=net, device=0)
    session = sim_process.session()
    session.xenapi.VIF.add_to_other_config(vif, "ethtool-tx", "off")
    session.xenapi.VM.add_to_other_config(vm, "netoffload-vif", "all-off")
    doomed = admin.add_vm(name_label="doomed")
    admin.destroy_vm(vm=doomed)
    before = admin.snapshot_db()
    assert before["VIF"][vif]["other_config"] == {"ethtool-tx": "off"}
    old_token = getattr(session.xenapi.event, "from")(["vif"], "", 1.0)["token"]
    old_handle = session.handle

    assert sim_process.stop(signal.SIGKILL) == -signal.SIGKILL
    sim_process.start()
    admin = SimClient(url=sim_process.info["url"])
    assert admin.snapshot_db() == before
    assert admin.info()["master"] == host
    raw = xmlrpc.client.ServerProxy(sim_process.info["url"])
    assert raw.VM.get_all(old_handle) == {
        "Status": "Failure", "ErrorDescription": ["SESSION_INVALID", old_handle]}
    # an old token still parses (the generation count persisted)
    fresh = sim_process.session()
    fresh.xenapi.VIF.remove_from_other_config(vif, "ethtool-tx")
    batch = getattr(fresh.xenapi.event, "from")(["vif"], old_token, 5.0)
    assert [(e["operation"], e["ref"]) for e in batch["events"]] == [("mod", vif)]
    assert sim_process.stop(signal.SIGTERM) == 0
    # SIGTERM compacts: everything is in the snapshot, the journal is empty
    assert os.path.getsize(sim_process.db + ".journal") == 0


def test_admin_errors(sim_process):
    sim_process.start()
    admin = SimClient(socket_path=sim_process.socket_path)
    with pytest.raises(SimError) as info:
        admin.add_vif(vm="OpaqueRef:nope", network="OpaqueRef:nope", device=0)
    assert info.value.description[0] == "HANDLE_INVALID"
    with pytest.raises(SimError) as info:
        admin.no_such_call()
    assert info.value.description == ["MESSAGE_METHOD_UNKNOWN", "sim.no_such_call"]


def test_torn_journal_line_is_ignored(sock_dir):
    path = os.path.join(sock_dir, "db.json")
    db = Database()
    db.attach(path)
    with db.lock:
        kept = db.create("VM", {"name_label": "kept"})
    db.detach_journal()
    with open(path + ".journal", "a") as fh:
        fh.write('{"op": "put", "cls": "VM", "ref": "OpaqueRef:x", "rec": {"na')
    again = Database()
    again.attach(path)
    assert list(again.tables["VM"]) == [kept]
    assert again.generation == db.generation


def test_xe_lookalike_one_process_per_command(sock_dir):
    from sim.xapi_sim import XapiSim
    with XapiSim(socket_path=sock_dir + "/xe.sock", state_root=sock_dir + "/st") as sim:
        net = sim.add_network("net0")
        vm = sim.add_vm("web 01", power_state="Halted")
        vif = sim.add_vif(vm, net, 0, other_config={"ethtool-tx": "on"})
        snap = sim.snapshot_db()
        vm_uuid, vif_uuid = snap["VM"][vm]["uuid"], snap["VIF"][vif]["uuid"]
        env = dict(os.environ, XE_SIM_SOCKET=sim.socket_path)

        def xe(*args):
            proc = subprocess.run([sys.executable, "-m", "sim.xe"] + list(args),
                                  cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, universal_newlines=True,
                                  timeout=30)
            return proc.returncode, proc.stdout.strip(), proc.stderr
        assert xe("vm-list", "name-label=web 01", "--minimal")[:2] == (0, vm_uuid)
        assert xe("vif-list", "vm-uuid=" + vm_uuid, "--minimal")[:2] == (0, vif_uuid)
        sim.reset_call_counts()
        assert xe("vif-param-set", "uuid=" + vif_uuid, "other-config:ethtool-tx=off")[0] == 0
        assert sim.call_counts() == {
            "session.login_with_password": 1, "VIF.get_by_uuid": 1,
            "VIF.remove_from_other_config": 1, "VIF.add_to_other_config": 1,
            "session.logout": 1}
        assert xe("vif-param-get", "uuid=" + vif_uuid, "param-name=other-config",
                  "param-key=ethtool-tx")[:2] == (0, "off")
        assert xe("vif-param-remove", "uuid=" + vif_uuid, "param-name=other-config",
                  "param-key=ethtool-tx")[0] == 0
        assert sim.snapshot_db()["VIF"][vif]["other_config"] == {}
        code, _, err = xe("vif-param-set", "uuid=nope", "other-config:a=b")
        assert code == 1 and "UUID_INVALID" in err
