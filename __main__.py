"""Entry point: read the stack's settings once, build the cluster, export its outputs."""
import pulumi
from pulumi.runtime import config as runtime_config

from components import backup, clone, fixed_settings, moves
from components.rendering import ssh_command
from components.cluster import PatroniCluster, PatroniClusterArgs
from components.config import REPOSITORY_NAME, SECRET_SETTINGS, ConfigError, build_spec
from components.shutdown import exit_quietly_when_interrupted
from components.tls import ca_file_name

if __name__ == "__main__":
    # Run by the engine (tests run the file under mocks, whose Ctrl-C must still reach
    # pytest's cleanup): a failed step's error, not a page of Python traceback, ends a
    # failed `pulumi up`.
    exit_quietly_when_interrupted()

config = pulumi.Config()


def stack_keys() -> set[str]:
    """Every key the stack sets in this program's namespace, known or not (a typo such
    as `nodecount` must not pass unseen). The engine hands the program its configuration
    in the environment; tests set it in the runtime."""
    prefix = f"{config.name}:"
    keys = {*runtime_config.CONFIG.get(), *runtime_config.get_config_env()}
    return {key[len(prefix):] for key in keys if key.startswith(prefix)}


# What the engine answers for a stack that has no deployment yet (seen with the file
# backend: its stack file holds no checkpoint before the first update completes).
NEVER_DEPLOYED = "failed to load checkpoint"


def last_outputs() -> dict:
    """This stack's outputs from its last run (read through the engine as a stack
    reference would), or {} for a new stack."""
    name = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    try:
        result = pulumi.runtime.invoke("pulumi:pulumi:readStackOutputs", {"name": name})
    except Exception as error:  # noqa: BLE001 - the engine's error, shown as a warning
        if NEVER_DEPLOYED in str(error):
            return {}  # a new stack's first preview or up: nothing to compare yet
        pulumi.log.warn(f"could not read this stack's last outputs ({error}); changes of "
                        f"settings fixed at creation are not checked on this run")
        return {}
    return dict((result.value or {}).get("outputs") or {})


try:
    # Every error at once, before any resource is registered. The secrets' values are
    # not read here, only whether they are set.
    keys = stack_keys()
    spec = build_spec({key: config.get(key) for key in keys - set(SECRET_SETTINGS)},
                      secrets_set=keys & set(SECRET_SETTINGS))
    last = last_outputs()
    fixed = dict(last.get(fixed_settings.OUTPUT) or {})
    refused = fixed_settings.refused_changes(fixed, spec)
    if refused:
        raise ConfigError(refused)
    # A node moving to another listed host, or one that moved in an earlier run.
    node_moves = moves.current(fixed.get("hosts", ""),
                               fixed_settings.record(spec).get("hosts", ""),
                               dict(last.get(moves.OUTPUT) or {}), spec)
except ConfigError as error:
    raise SystemExit(str(error)) from None

cluster = PatroniCluster(spec.cluster_name, PatroniClusterArgs(
    spec=spec,
    ssh_public_key=spec.ssh_public_key or None,
    ssh_private_key=None if spec.generates_ssh_key else config.require_secret("sshPrivateKey"),
    tls_ca_private_key=None if spec.tls is None or spec.tls.generates_ca
    else config.require_secret("tlsCaPrivateKey"),
    moves=node_moves,
))

pulumi.export("nodeIps", cluster.node_ips)
if spec.hosts:
    # Where each VM runs (the repository too): the host to look at when one is lost.
    pulumi.export("nodeHosts", dict(spec.placement))
if node_moves:
    # Read back by the next run, which declares the moves' steps again (moves.current).
    pulumi.export(moves.OUTPUT, {n: m.record for n, m in node_moves.items()})
pulumi.export("leaderAtCreation", cluster.leader)
pulumi.export("dsnReadWrite", cluster.dsn_read_write)
pulumi.export("dsnReadOnly", cluster.dsn_read_only)
pulumi.export("restUrls", cluster.rest_urls)
pulumi.export("sshCommands", cluster.node_ips.apply(
    lambda ips: {n: ssh_command(spec, n, ip) for n, ip in ips.items()}))
pulumi.export("patronictl", cluster.node_ips.apply(
    lambda ips: f"{ssh_command(spec, *next(iter(ips.items())))} "
                f"sudo -u postgres patronictl -c /etc/patroni/patroni.yml list"))
if spec.tls is not None:
    # Public: clients save it where the DSNs' sslrootcert points, the file named by
    # caCertificateFile (the README's connect lines read both).
    pulumi.export("caCertificate", cluster.ca_certificate)
    pulumi.export("caCertificateFile", ca_file_name(spec))
pulumi.export("knownHosts", cluster.known_hosts)
# Read back by the next run (last_outputs): what a live cluster cannot change.
pulumi.export(fixed_settings.OUTPUT, fixed_settings.record(spec))
pulumi.export("sshPrivateKey", cluster.ssh_private_key)
pulumi.export("passwords", cluster.passwords)
if spec.backups is not None:
    pulumi.export("backupRepositoryHost", cluster.repository_ip)
    pulumi.export("backupInfoCommand", cluster.repository_ip.apply(
        lambda ip: f"{ssh_command(spec, REPOSITORY_NAME, ip)} "
                   f"{backup.info_command(stanza=spec.cluster_name)}"))
    pulumi.export("backupLabelAtCreation", cluster.backup_label)
    # Read by another stack's cloneFromStack: a client identity for this repository.
    pulumi.export(clone.SOURCE_OUTPUT, cluster.backup_clone_source)
