"""A node moved to another listed host, under mocks: it leaves on its old VM and another
member forgets it before its VM's resources (replaced because their host's URI, their
replacement trigger, changed; the old ones deleted first) are made on the new host; its
new VM joins Raft before the health gate; the next runs declare the same steps again."""
import pulumi
import pytest

from components import fixed_settings, moves
from components.config import build_spec
from tests.pulumi_mocks import COMMAND, DOMAIN, SEED, VOLUME, Program
from tests.unit.test_fixed_settings import LiveStackMocks
from tests.pulumi_mocks import run_program as run_mocked

HOSTS = [{"name": f"hv{i}", "uri": f"qemu+ssh://root@hv{i}/system", "bridge": "br0"}
         for i in (1, 2, 3, 4)]
BEFORE = {"hosts": HOSTS, "networkCidr": "10.20.0.0/24", "networkGateway": "10.20.0.1",
          "backups": True, "placement": {"repository": "hv1"}}
# srv3 from hv3 to hv4 (hv3 stays listed, as when a host is drained before it goes).
AFTER = {**BEFORE, "placement": {"repository": "hv1", "srv3": "hv4"}}
MOVE = "pg-raft-srv3-move-to-hv4"


def last_run(settings: dict, node_moves: dict | None = None) -> dict:
    outputs = {fixed_settings.OUTPUT: fixed_settings.record(build_spec(settings))}
    if node_moves:
        outputs[moves.OUTPUT] = node_moves
    return outputs


def run(settings: dict, last: dict) -> Program:
    return run_mocked(settings, LiveStackMocks(last))


def test_a_moved_node_leaves_and_is_forgotten_before_its_vm_is_made_on_the_new_host():
    prog = run(AFTER, last_run(BEFORE))
    leave, forget = prog.named(f"{MOVE}-leave"), prog.named(f"{MOVE}-forget")
    # The old VM, by the node's static address: the new one does not exist yet.
    assert leave.inputs["connection"]["host"] == "10.20.0.12"
    assert "run_membership handover --candidates srv1,srv2" in leave.inputs["stdin"]
    assert 'changed "stopped patroni"' in leave.inputs["stdin"].split("delete)")[0]
    # Through a member that stays, after the leave.
    assert forget.inputs["connection"]["host"] == "10.20.0.10"
    assert ("run_membership forget --address 10.20.0.12:5010 --name srv3"
            in forget.inputs["stdin"])
    assert leave.urn in forget.dependencies
    # Once each: a later program's script or connection never runs them again.
    for step in (leave, forget):
        assert step.ignore_changes == ["stdin", "connection"]
        assert step.inputs["create"] == "sudo bash -s create" and not step.inputs.get("delete")
    for suffix in ("disk", "seed", "domain"):
        reg = prog.named(f"pg-raft-srv3-{suffix}")
        assert forget.urn in reg.dependencies, suffix
        assert reg.replacement_trigger == "qemu+ssh://root@hv4/system", suffix
        assert reg.delete_before_replace, suffix
    # The new VM joins once its Patroni started; the gate waits for it.
    join = prog.named(f"{MOVE}-join")
    assert "run_membership join" in join.inputs["stdin"]
    assert prog.named("pg-raft-srv3-provision-start").urn in join.dependencies
    assert join.inputs["triggers"] == ["pg-raft-srv3-domain_id"]
    assert join.urn in prog.named("pg-raft-health-gate").dependencies
    assert prog.stack_outputs()[moves.OUTPUT] == {
        "srv3": {"from": "qemu+ssh://root@hv3/system", "to": "hv4"}}


def test_the_next_runs_declare_the_moves_steps_again_and_nothing_more():
    first = run(AFTER, last_run(BEFORE))
    recorded = first.stack_outputs()[moves.OUTPUT]
    again = run(AFTER, last_run(AFTER, recorded))
    def steps(prog):
        return {r.name: (r.inputs.get("stdin"), r.dependencies)
                for r in prog.of_type(COMMAND) if "move-to" in r.name}
    assert steps(again).keys() == {f"{MOVE}-leave", f"{MOVE}-forget", f"{MOVE}-join"}
    assert {n: s[0] for n, s in steps(again).items()} == {
        n: s[0] for n, s in steps(first).items()}
    assert again.stack_outputs()[moves.OUTPUT] == recorded
    # Moved back: the earlier record goes, this move's steps come.
    back = run(BEFORE, last_run(AFTER, recorded))
    assert {r.name for r in back.of_type(COMMAND) if "move-to" in r.name} == {
        "pg-raft-srv3-move-to-hv3-leave", "pg-raft-srv3-move-to-hv3-forget",
        "pg-raft-srv3-move-to-hv3-join"}
    assert back.stack_outputs()[moves.OUTPUT] == {
        "srv3": {"from": "qemu+ssh://root@hv4/system", "to": "hv3"}}


def test_without_a_move_no_move_step_and_no_move_output():
    prog = run(BEFORE, last_run(BEFORE))
    assert [r.name for r in prog.of_type(COMMAND) if "move-to" in r.name] == []
    assert moves.OUTPUT not in prog.stack_outputs()
    # The trigger is there from the start (adding it to existing resources replaces
    # nothing); nothing waits for a move.
    for node, host in (("srv1", "hv1"), ("srv3", "hv3"), ("repository", "hv1")):
        for typ, suffix in ((VOLUME, "disk"), (SEED, "seed"), (DOMAIN, "domain")):
            reg = prog.named(f"pg-raft-{node}-{suffix}")
            assert reg.type == typ
            assert reg.replacement_trigger == f"qemu+ssh://root@{host}/system"
            assert not [d for d in reg.dependencies if "move-to" in d]


def test_a_single_host_stack_has_no_replacement_trigger():
    prog = run({}, {})
    for reg in prog.of_type(DOMAIN) + prog.of_type(VOLUME) + prog.of_type(SEED):
        assert reg.replacement_trigger is None and not reg.delete_before_replace, reg.name


@pytest.mark.parametrize("placement, refusal", [
    ({"repository": "hv1", "srv2": "hv4", "srv3": "hv1"}, "would move 2 nodes at once"),
    ({"repository": "hv4"}, "would move the backup repository"),
])
def test_a_refused_move_registers_nothing(placement, refusal):
    with pytest.raises(SystemExit) as excinfo:
        run({**BEFORE, "placement": placement, "allowHostMajority": True},
            last_run(BEFORE))
    assert refusal in str(excinfo.value)
    registered = pulumi.runtime.settings.SETTINGS.monitor.registrations
    assert [r.type for r in registered if r.type != "pulumi:pulumi:Stack"] == []
