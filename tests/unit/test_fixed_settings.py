"""Settings a live cluster cannot change: every setting is classified, a change of a fixed
one is refused before any resource (the program reads its own stack's last outputs), and
every in-place one passes."""
import grpc
import pulumi
import pytest

from components import fixed_settings
from components.config import SECRET_SETTINGS, SETTINGS, build_spec
from tests.unit.test_program_backups import Mocks
from tests.pulumi_mocks import run_program

USER_CA = ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
BASE = {"backups": True}


class LiveStackMocks(Mocks):
    """A stack whose last run exported `fixedSettings` (what the engine's
    readStackOutputs returns for it)."""

    def __init__(self, last_outputs: dict):
        super().__init__()
        self.last_outputs = last_outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "pulumi:pulumi:readStackOutputs":
            return {"name": args.args["name"], "outputs": self.last_outputs,
                    "secretOutputNames": []}
        return super().call(args)


def previous(settings: dict) -> dict:
    return {fixed_settings.OUTPUT: fixed_settings.record(build_spec(settings))}


def test_every_setting_is_classified_as_fixed_or_changeable_in_place():
    fixed, in_place = set(fixed_settings.FIXED), set(fixed_settings.IN_PLACE)
    assert not fixed & in_place
    assert fixed | in_place == set(SETTINGS)
    assert not set(SECRET_SETTINGS) & (fixed | in_place)


# A new value for each fixed setting that is valid on its own (with BASE), so only the
# comparison with the live cluster can refuse it.
FIXED_CHANGES = {
    "libvirtUri": "qemu+ssh://root@hv2/system",
    "domainType": "qemu",
    "cpuMode": "host-model",
    "vcpus": 4,
    "memoryMib": 4096,
    "diskGib": 40,
    "namePrefix": "pg",
    "osFamily": "debian12",
    "baseImage": "https://images.example/other.qcow2",
    "storagePool": "fast",
    "networkName": "lab",
    "networkCidr": "10.77.0.0/24",
    "networkMode": "none",
    "sshUser": "admin",
    "sshPublicKey": "ssh-ed25519 AAAAother me",
    "clusterName": "other",
    "namespace": "/other/",
    "postgresVersion": 16,
    "postgresSource": "distro",
    "tls": False,
    "tlsCaCertificate": USER_CA,
    "backups": False,
    "backupEncrypt": False,
    "backupRepoDiskGib": 100,
    "backupRepoMemoryMib": 2048,
    "cloneFromStack": "organization/pgha/prod",
    "hosts": [{"name": f"hv{i}", "uri": f"qemu+ssh://root@hv{i}/system", "bridge": "br0"}
              for i in (1, 2, 3)],
    "networkGateway": "192.168.130.1",
    "networkDns": ["192.168.130.2"],
    "firstNodeAddress": "192.168.130.50",
}
# What a change needs besides the new value to be valid on its own.
COMPANIONS = {
    "networkName": {"adminCidrs": ["192.168.122.0/24"]},
    "networkMode": {"httpProxy": "http://proxy:3128"},
    "postgresSource": {"osFamily": "debian12", "postgresVersion": 15},
    "hosts": {"networkCidr": "192.168.130.0/24"},  # the LAN's, said explicitly
    "networkGateway": {"hosts": FIXED_CHANGES["hosts"], "networkCidr": "192.168.130.0/24"},
    "networkDns": {"hosts": FIXED_CHANGES["hosts"], "networkCidr": "192.168.130.0/24"},
    "firstNodeAddress": {"hosts": FIXED_CHANGES["hosts"], "networkCidr": "192.168.130.0/24"},
}


def test_the_fixed_changes_cover_every_fixed_setting():
    assert set(FIXED_CHANGES) == set(fixed_settings.FIXED)


@pytest.mark.parametrize("key", sorted(FIXED_CHANGES))
def test_a_change_of_a_fixed_setting_is_refused_naming_it(key):
    changed = build_spec({**BASE, **COMPANIONS.get(key, {}), key: FIXED_CHANGES[key]})
    problems = fixed_settings.refused_changes(previous(BASE)[fixed_settings.OUTPUT],
                                              changed)
    (line,) = [p for p in problems if p.startswith(f"pgha:{key} ")]
    assert "cannot change in place" in line and fixed_settings.FIXED[key].why in line
    assert "Set " in line and " back" in line


def test_the_program_refuses_a_new_postgres_version_on_a_live_stack_before_any_resource():
    with pytest.raises(SystemExit) as excinfo:
        run_program({**BASE, "postgresVersion": 16}, LiveStackMocks(previous(BASE)))
    message = str(excinfo.value)
    assert "pgha:postgresVersion = '16': the live cluster was created with '14'" in message
    assert "Set it back to '14'" in message
    # Nothing but the stack itself (reading its outputs registers it, in the first run of
    # a process; later runs reuse it).
    registered = pulumi.runtime.settings.SETTINGS.monitor.registrations
    assert [r.type for r in registered if r.type != "pulumi:pulumi:Stack"] == []


def test_the_program_asks_the_engine_for_its_own_stack():
    prog = run_program(BASE, LiveStackMocks(previous(BASE)))
    (args,) = prog.invokes_of("pulumi:pulumi:readStackOutputs")
    assert args["name"].endswith("/pgha/test")


def test_the_program_exports_what_the_next_run_compares():
    prog = run_program(BASE, Mocks())
    exported = prog.stack_outputs()[fixed_settings.OUTPUT]
    assert exported == previous(BASE)[fixed_settings.OUTPUT]
    # Keys are recorded as digests, not in the clear.
    keyed = run_program({**BASE, "sshPublicKey": "ssh-ed25519 AAAAkey me",
                         "sshPrivateKey": "k"}, Mocks()).stack_outputs()
    assert keyed[fixed_settings.OUTPUT]["sshPublicKey"].startswith("sha256:")
    assert "AAAAkey" not in str(keyed[fixed_settings.OUTPUT])


def test_a_new_stack_and_a_stack_recorded_before_the_check_are_not_compared():
    run_program({**BASE, "postgresVersion": 16}, LiveStackMocks({}))
    old_record = {k: v for k, v in previous(BASE)[fixed_settings.OUTPUT].items()
                  if k != "postgresVersion"}
    run_program({**BASE, "postgresVersion": 16},
                LiveStackMocks({fixed_settings.OUTPUT: old_record}))


IN_PLACE_CHANGES = {
    "nodeCount": 5, "patroniVersion": "4.0.7", "ttl": 40, "loopWait": 5,
    "retryTimeout": 8, "maximumLagOnFailover": 0, "synchronousMode": False,
    "watchdogMode": "automatic", "watchdogSafetyMargin": 10,
    "postgresParameters": {"work_mem": "16MB"}, "clientCidrs": ["10.9.0.0/16"],
    "firewall": False, "adminCidrs": ["10.8.0.0/24"], "openToAnyAddress": True,
    "tlsCertificateDays": 90, "tlsRenewalDays": 10, "nodeTags": {"srv3": {"nosync": True}},
    "httpProxy": "http://proxy:3128", "extraCaCertificates": USER_CA,
    "pythonIndexUrl": "http://pypi.local/simple", "healthTimeoutSeconds": 600,
    "backupRetentionFull": 4, "backupFullSchedule": "Sat *-*-* 02:00:00",
    "backupDiffSchedule": "", "backupCompressType": "lz4", "backupCompressLevel": 1,
    "backupArchiveQueueMax": "4GiB", "restoreTarget": "latest",
    # Stating where the nodes already are; adding nodes is the test below.
    "placement": {"srv1": "hv1", "srv2": "hv2"}, "allowHostMajority": True,
}
# The stack an in-place change applies to, where BASE cannot say it.
ON_HOSTS = {**BASE, "hosts": FIXED_CHANGES["hosts"], "networkCidr": "192.168.130.0/24"}
IN_PLACE_BASES = {"placement": ON_HOSTS, "allowHostMajority": ON_HOSTS}


def test_the_in_place_changes_cover_every_changeable_setting():
    assert set(IN_PLACE_CHANGES) == set(fixed_settings.IN_PLACE)


@pytest.mark.parametrize("key", sorted(IN_PLACE_CHANGES))
def test_a_change_of_an_in_place_setting_passes(key):
    base = IN_PLACE_BASES.get(key, BASE)
    changed = build_spec({**base, key: IN_PLACE_CHANGES[key]})
    assert fixed_settings.refused_changes(previous(base)[fixed_settings.OUTPUT],
                                          changed) == []


def test_a_single_host_stack_records_what_it_did_before_hosts_existed():
    """No new key in its fixedSettings output: an existing stack's outputs stay as they
    were (the hosts' keys are recorded only when set)."""
    recorded = fixed_settings.record(build_spec(BASE))
    assert not {"hosts", "networkGateway", "networkDns"} & set(recorded)


def test_on_hosts_nodes_come_and_go_and_one_node_at_a_time_moves_to_another_host():
    last = previous(ON_HOSTS)[fixed_settings.OUTPUT]
    grown = build_spec({**ON_HOSTS, "nodeCount": 5, "placement": {"srv4": "hv3"}})
    assert fixed_settings.refused_changes(last, grown) == []
    one = {**ON_HOSTS, "placement": {"srv3": "hv1"}, "allowHostMajority": True}
    # The repository would follow the fewest core nodes to hv3: it keeps its host.
    (line,) = fixed_settings.refused_changes(last, build_spec(one))
    assert line.endswith("set pgha:placement.repository to hv1"), line
    pinned = {**one, "placement": {"srv3": "hv1", "repository": "hv1"}}
    assert fixed_settings.refused_changes(last, build_spec(pinned)) == []
    moved = build_spec({**ON_HOSTS, "placement": {"srv1": "hv2", "srv2": "hv1"}})
    (line,) = fixed_settings.refused_changes(last, moved)
    assert line.startswith("pgha:placement (or pgha:hosts) would move 2 nodes at once "
                           "(srv1 from qemu+ssh://root@hv1/system to "
                           "qemu+ssh://root@hv2/system; srv2 from qemu+ssh://root@hv2/system "
                           "to qemu+ssh://root@hv1/system): move one node per `pulumi up`"), line
    # A host's new URI moves its nodes (and, here, the repository with srv3's host hv3).
    renamed = [{**h, "uri": h["uri"].replace("hv3", "hv9")} for h in ON_HOSTS["hosts"]]
    assert fixed_settings.refused_changes(last, build_spec({**ON_HOSTS,
                                                            "hosts": renamed})) == []
    # Another pool on the same host is not a move: still refused as before.
    repooled = [{**h, "storagePool": "fast"} if h["name"] == "hv3" else h
                for h in ON_HOSTS["hosts"]]
    (line,) = fixed_settings.refused_changes(last, build_spec({**ON_HOSTS,
                                                               "hosts": repooled}))
    assert line.startswith("pgha:hosts (or pgha:placement) would move srv3 on "
                           "qemu+ssh://root@hv3/system to another pool or LAN attachment"), line
    back_to_one = fixed_settings.refused_changes(last, build_spec(BASE))
    assert [p for p in back_to_one if p.startswith(
        "pgha:hosts would move every VM between one libvirt host and a list of hosts")]


def test_a_move_of_the_repository_or_of_a_node_added_by_scaling_is_refused():
    last = previous(ON_HOSTS)[fixed_settings.OUTPUT]
    (line,) = fixed_settings.refused_changes(last, build_spec(
        {**ON_HOSTS, "placement": {"repository": "hv3"}}))
    assert line.startswith("pgha:placement (or pgha:hosts) would move the backup "
                           "repository (repository from qemu+ssh://root@hv1/system to "
                           "qemu+ssh://root@hv3/system)"), line
    five = {**ON_HOSTS, "nodeCount": 5, "firewall": False, "allowHostMajority": True,
            "placement": {"repository": "hv1"}}
    last = previous(five)[fixed_settings.OUTPUT]
    (line,) = fixed_settings.refused_changes(last, build_spec(
        {**five, "placement": {"srv4": "hv3", "repository": "hv1"}}))
    assert line.startswith("pgha:placement would move srv4 from qemu+ssh://root@hv1/system "
                           "to qemu+ssh://root@hv3/system: nodes added by scaling keep "
                           "their hosts"), line
    # A core node of a 5-node stack moves, unless the firewall is on.
    assert fixed_settings.refused_changes(last, build_spec(
        {**five, "placement": {"srv3": "hv2", "repository": "hv1"}})) == []
    fenced = {**five, "firewall": True}
    (line,) = fixed_settings.refused_changes(
        previous(fenced)[fixed_settings.OUTPUT],
        build_spec({**fenced, "placement": {"srv3": "hv2", "repository": "hv1"}}))
    assert line.startswith("moving srv3 with nodes past the third and the firewall on"), line


def test_a_move_and_a_change_of_node_count_are_refused_together():
    last = previous(ON_HOSTS)[fixed_settings.OUTPUT]
    (line,) = fixed_settings.refused_changes(last, build_spec(
        {**ON_HOSTS, "nodeCount": 5, "firewall": False, "allowHostMajority": True,
         "placement": {"srv3": "hv1", "repository": "hv1"}}))
    assert line.startswith("pgha:nodeCount = 5 (was 3) in the same run as moving srv3"), line


@pytest.mark.parametrize("before, after", [
    ({}, {"backups": True}),  # turning backups on creates the repository
    ({"cloneFromStack": "organization/pgha/prod"}, {}),  # a clone detached from its source
])
def test_the_one_way_changes_that_are_allowed(before, after):
    assert fixed_settings.refused_changes(previous(before)[fixed_settings.OUTPUT],
                                          build_spec(after)) == []


def test_turning_backups_off_is_refused_because_it_deletes_them():
    problems = fixed_settings.refused_changes(previous(BASE)[fixed_settings.OUTPUT],
                                              build_spec({}))
    assert [p for p in problems if p.startswith("pgha:backups = 'false'")]
    assert all("repository" in p or "backup" in p for p in problems)


class EngineError(grpc.RpcError):
    """An invoke's error as the engine returns it (a gRPC status with details)."""

    def __init__(self, details: str):
        super().__init__(details)
        self._details = details

    def code(self):
        return grpc.StatusCode.UNKNOWN

    def details(self):
        return self._details


class FailingReadMocks(LiveStackMocks):
    def __init__(self, error: str):
        super().__init__({})
        self.error = error

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "pulumi:pulumi:readStackOutputs":
            raise EngineError(self.error)
        return super().call(args)


def test_a_stack_never_deployed_is_not_compared_and_not_warned_about(caplog):
    # The engine's answer on a new stack's first up (file backend, Pulumi 3.277).
    run_program(BASE, FailingReadMocks("invocation of pulumi:pulumi:readStackOutputs "
                                       "returned an error: failed to load checkpoint: EOF"))
    assert "could not read this stack's last outputs" not in caplog.text


def test_any_other_failure_to_read_the_last_outputs_is_a_warning(caplog):
    run_program(BASE, FailingReadMocks("permission denied"))
    assert "could not read this stack's last outputs" in caplog.text
