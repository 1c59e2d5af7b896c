"""Today's single-host stacks keep their resource graph exactly: every resource's URN
parts (type, name, parent), its provider, and every libvirt resource's inputs, compared
with what the program registered before hosts could be listed
(golden/single-host-graph.json). A renamed resource or a moved provider would make
`pulumi up` delete and recreate it (a VM, its disk or a step that re-runs), so any
difference here is a change users' running stacks would see.

After a deliberate change of the graph, rewrite the file and say why in the commit:

    .venv/bin/python -m tests.unit.test_single_host_graph --write
"""
from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from tests.conftest import REPO
from tests.unit.test_program_backups import run_program

GOLDEN = REPO / "tests" / "unit" / "golden" / "single-host-graph.json"
STACKS: dict[str, dict[str, Any]] = {
    "created network, 3 nodes": {},
    "created network, 5 nodes, backups": {"nodeCount": 5, "backups": True},
    "existing network, qemu": {"networkName": "lan", "adminCidrs": ["10.1.0.0/24"],
                               "domainType": "qemu"},
}


def _last(ref: str, part: int) -> str:
    return ref.split("::")[part] if ref else ""


def graph(settings: dict[str, Any]) -> dict[str, Any]:
    """What the engine compares with a stack's state, per resource."""
    entries = {}
    for r in run_program(settings).registrations:
        if r.type == "pulumi:pulumi:Stack":
            continue  # registered by the first run in a process only
        entry: dict[str, Any] = {"parent": _last(r.parent, -1),
                                 "provider": _last(r.provider, -2)}
        if r.type.startswith(("libvirt:", "pulumi:providers:libvirt")):
            # The seed's user data is ignored after creation (ignoreChanges says so).
            entry["inputs"] = {k: v for k, v in r.inputs.items() if k != "userData"}
            entry["ignoreChanges"] = sorted(r.ignore_changes)
        entries[f"{r.type}::{r.name}"] = entry
    return entries


@pytest.mark.parametrize("stack", STACKS)
def test_a_single_host_stack_registers_exactly_what_it_did(stack):
    expected = json.loads(GOLDEN.read_text())[stack]
    actual = graph(STACKS[stack])
    assert sorted(actual) == sorted(expected), "resources added or removed"
    changed = {k: (expected[k], actual[k]) for k in actual if actual[k] != expected[k]}
    assert changed == {}


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.write_text(json.dumps({name: graph(settings) for name, settings in
                                  STACKS.items()}, indent=1, sort_keys=True) + "\n")
