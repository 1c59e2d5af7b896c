"""A stack created from another stack's backups (cloneFromStack), under mocks: what the
source exports, what the clone reads through its stack reference, the steps and their
order, and the errors a user gets before anything is created."""
import json

import pulumi
import pytest
import yaml

from components import backup, clone
from components.config import ConfigError, build_spec
from tests.pulumi_mocks import Program
from tests.pulumi_mocks import run_program as run_mocked
from tests.unit.test_program_backups import REPO_IP, decoded_files
from tests.unit.test_program_backups import Mocks as BackupMocks
from tests.unit.test_program_backups import run_program as run_backups

STACK_REFERENCE = "pulumi:pulumi:StackReference"
SOURCE_STACK = "organization/pgha/prod"
SOURCE = {"stanza": "prod", "host": "198.51.100.9", "port": 8432, "postgresVersion": 14,
          "caCert": "PEM of the prod CA", "cert": "PEM of the clone cert",
          "key": "PRIVATE KEY of the clone"}


class Mocks(BackupMocks):
    """Another stack, `prod`, exists and exports `outputs`."""

    def __init__(self, outputs: dict):
        super().__init__()
        self.outputs = outputs
        self.stacks_read: list[str] = []  # a stack reference is read, not registered

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        if args.typ == STACK_REFERENCE:
            self.stacks_read.append(args.inputs["name"])
            return args.name, {"name": args.inputs["name"], "outputs": self.outputs,
                               "secretOutputNames": list(self.outputs)}
        return super().new_resource(args)


def run_clone(settings: dict) -> Program:
    mocks = Mocks({clone.SOURCE_OUTPUT: SOURCE})
    prog = run_mocked({"cloneFromStack": SOURCE_STACK, **settings}, mocks)
    prog.stacks_read = mocks.stacks_read
    return prog


def test_a_source_exports_a_client_identity_for_clones_as_a_secret():
    prog = run_backups({"backups": True, "clusterName": "prod"})
    cluster = prog.namespace["cluster"]
    assert prog.is_secret(cluster.backup_clone_source)
    exported = prog.resolve(cluster.backup_clone_source)
    assert exported == {
        "stanza": "prod", "host": REPO_IP, "port": backup.TLS_PORT, "postgresVersion": 14,
        "caCert": "PEM of prod-repository-ca",
        "cert": "PEM of prod-repository-clone-tls-cert",
        "key": "PRIVATE KEY of prod-repository-clone-tls-key"}
    # The source's repository admits that identity's name.
    repo_files = decoded_files(
        prog.named("prod-repository-configure-pgbackrest").inputs["stdin"])
    assert "tls-server-auth=prod-clone=prod" in repo_files["/etc/pgbackrest/pgbackrest.conf"]
    assert run_backups({}).namespace["cluster"].backup_clone_source is None


def test_every_clone_node_reads_the_source_through_a_file_of_its_own_and_proves_it():
    prog = run_clone({})
    assert prog.stacks_read == [SOURCE_STACK]
    # No repository of its own: backups are off on the clone.
    assert not [r for r in prog.registrations if "repository" in r.name]
    for i in (1, 2, 3):
        step = prog.named(f"pg-raft-srv{i}-provision-configure-clone-source")
        assert "stdin" in step.secret_keys
        assert {"stdout", "stderr"} <= step.additional_secret_outputs
        install = prog.named(f"pg-raft-srv{i}-provision-install-pgbackrest")
        assert install.urn in step.dependencies
        files = decoded_files(step.inputs["stdin"])
        conf = files["/etc/pgbackrest/clone-source/pgbackrest.conf"]
        assert "repo1-host=198.51.100.9" in conf and "[prod]" in conf
        options = [line for line in conf.splitlines() if not line.startswith("#")]
        assert not [o for o in options if o.startswith(("archive-push", "tls-server"))]
        assert files["/etc/pgbackrest/clone-source/client.key"] == SOURCE["key"]
        # Before anything starts, the script asks the source for its backups.
        assert ("pgbackrest --config=/etc/pgbackrest/clone-source/pgbackrest.conf "
                "--stanza=prod --output=json info") in step.inputs["stdin"]
        assert step.urn in prog.named(f"pg-raft-srv{i}-provision-start").dependencies
        # The node's own pgBackRest configuration (and archiving) stays off.
        assert not [r for r in prog.registrations
                    if r.name == f"pg-raft-srv{i}-provision-configure-pgbackrest"]


def test_the_clone_bootstraps_from_the_source_and_never_archives_into_it():
    prog = run_clone({"restoreTarget": "time:2026-11-26 14:05:00+00"})
    patroni = yaml.safe_load(decoded_files(
        prog.named("pg-raft-srv1-provision-configure").inputs["stdin"])
        ["/etc/patroni/patroni.yml"])
    method = patroni["bootstrap"]["method"]
    command = patroni["bootstrap"][method]["command"]
    assert command.startswith("/usr/bin/pgbackrest --config=/etc/pgbackrest/clone-source/"
                              "pgbackrest.conf --stanza=prod --delta ")
    assert "'--target=2026-11-26 14:05:00+00'" in command
    assert ("'--recovery-option=restore_command=/usr/bin/pgbackrest --config=/etc/pgbackrest/"
            "clone-source/pgbackrest.conf --stanza=prod archive-get %f \"%p\"'") in command
    assert "archive_command" not in json.dumps(patroni)
    assert "recovery_conf" not in patroni["postgresql"]


def test_the_clone_with_backups_archives_into_its_own_repository_only():
    prog = run_clone({"backups": True, "clusterName": "staging"})
    patroni = yaml.safe_load(decoded_files(
        prog.named("staging-srv1-provision-configure").inputs["stdin"])
        ["/etc/patroni/patroni.yml"])
    archive = patroni["bootstrap"]["dcs"]["postgresql"]["parameters"]["archive_command"]
    assert "--stanza=staging" in archive and "--config" not in archive
    assert "--stanza=prod" in patroni["bootstrap"][patroni["bootstrap"]["method"]]["command"]
    # The restore target is the source's: nothing is checked against the own repository.
    assert not [r for r in prog.registrations if r.name == "staging-restore-check"]


def test_nodes_are_emptied_only_after_every_node_proved_the_source():
    prog = run_clone({})
    ready = {prog.named(f"pg-raft-srv{i}-provision-configure-clone-source").urn
             for i in (1, 2, 3)}
    resets = [prog.named(f"pg-raft-srv{i}-provision-restore-reset") for i in (1, 2, 3)]
    starts = [prog.named(f"pg-raft-srv{i}-provision-restore-start") for i in (1, 2, 3)]
    for reset in resets:
        assert ready <= reset.dependencies
        assert f"request='clone {SOURCE_STACK} latest'" in reset.inputs["stdin"]
    for start in starts:
        assert {r.urn for r in resets} <= start.dependencies
    # A node that starts empty records the request, so a new clone restores once.
    first_start = prog.named("pg-raft-srv1-provision-start").inputs["stdin"]
    assert f"'clone {SOURCE_STACK} latest' > /var/lib/pgha/restored-target" in first_start
    gate = prog.named("pg-raft-health-gate")
    assert f"clone {SOURCE_STACK} latest" in json.dumps(gate.inputs["triggers"])


def test_a_source_without_the_output_or_on_another_major_version_is_refused():
    # The program resolves the stack reference through clone.parse_source (at preview);
    # called directly here: a failing program run leaves CPython 3.11's AST state broken
    # for later tests in the same process (SystemError in ast.parse).
    spec = build_spec({"cloneFromStack": SOURCE_STACK})
    with pytest.raises(ValueError, match="has no backupCloneSource output"):
        clone.parse_source(spec, None)
    newer = build_spec({"cloneFromStack": SOURCE_STACK, "postgresVersion": 15})
    with pytest.raises(ValueError, match=r"pgha:postgresVersion = 15: the clone source "
                                         r"'organization/pgha/prod' runs PostgreSQL 14"):
        clone.parse_source(newer, SOURCE)
    assert clone.parse_source(spec, SOURCE).host == "198.51.100.9"


@pytest.mark.parametrize("value", ["a b", "org/proj/stack/extra", "prod;rm"])
def test_a_bad_stack_name_is_refused_with_the_setting_named(value):
    with pytest.raises(ConfigError, match=f"pgha:cloneFromStack.*{value}"):
        build_spec({"cloneFromStack": value})


def test_a_restore_target_needs_backups_or_a_clone_source():
    with pytest.raises(ConfigError, match="needs backups true"):
        build_spec({"restoreTarget": "latest"})
    spec = build_spec({"cloneFromStack": "prod", "restoreTarget": "name:before-migration"})
    assert spec.clone.target.text == "name:before-migration" and spec.backups is None
    assert build_spec({"cloneFromStack": "prod"}).clone.target.text == "latest"
    # With backups on too, the target is the source's, not a restore of the own repository.
    both = build_spec({"cloneFromStack": "prod", "backups": True, "restoreTarget": "latest"})
    assert both.backups.restore_target is None and both.clone.target.text == "latest"
