"""``slmops acls``: print the Kafka ACLs of every role, or apply them to a cluster.

The grants come from :mod:`streams.events.acls`. ``apply`` runs Kafka's own AclCommand (the
``kafka-acls.sh`` of a Kafka distribution) from the jars the local broker uses, once per grant,
with the same ``SLMOPS_*`` connection settings as every other command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slmops.errors import SlmopsError
from streams.events.acls import (
    ROLES,
    Binding,
    Grant,
    Names,
    acl_arguments,
    bindings,
    matrix_rows,
    principal,
    roles,
)
from streams.kafka.connection import KafkaConnection

ACL_COMMAND = "org.apache.kafka.tools.AclCommand"

EPILOG = """\
principals:
  Each role gets the principal User:slmops-<role> unless --principal ROLE=PRINCIPAL names
  others (repeat it: one SCRAM user or certificate per device is
  --principal device=User:device-0001 --principal device=User:device-0002 ...).

examples:
  slmops acls show                                  the matrix, role by role
  slmops acls show --format commands --principal device=User:edge-fleet
  SLMOPS_BOOTSTRAP_SERVERS=kafka:9093 SLMOPS_SECURITY_PROTOCOL=SASL_SSL \\
    SLMOPS_SASL_MECHANISM=SCRAM-SHA-256 SLMOPS_SASL_USERNAME=admin SLMOPS_SASL_PASSWORD=... \\
    slmops acls apply --principal device=User:edge-fleet --principal publisher=User:crm

exit codes: 0 done, 1 a grant the cluster refused (the rest are not tried), 2 bad usage
"""


class AclCommandError(SlmopsError):
    """Kafka's AclCommand refused or failed; its own words follow."""


def _jaas(conn: KafkaConnection) -> str:
    module = (
        "org.apache.kafka.common.security.plain.PlainLoginModule"
        if conn.sasl_mechanism == "PLAIN"
        else "org.apache.kafka.common.security.scram.ScramLoginModule"
    )
    assert conn.sasl_password is not None  # the connection's validator checks it
    user = json.dumps(conn.sasl_username)
    password = json.dumps(conn.sasl_password.get_secret_value())
    return f"{module} required username={user} password={password};"


def client_properties(conn: KafkaConnection) -> str:
    """The Java client's properties for the same cluster access as ``conn``."""
    if conn.ssl_certfile or conn.ssl_keyfile:
        raise AclCommandError(
            "applying ACLs with a client certificate is not supported here: run the commands "
            "`slmops acls show --format commands` prints with kafka-acls.sh --command-config"
        )
    lines = [f"security.protocol={conn.security_protocol}"]
    if conn.uses_tls:
        if conn.ssl_cafile:
            lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={conn.ssl_cafile}"]
        if not conn.ssl_check_hostname:
            lines.append("ssl.endpoint.identification.algorithm=")
    if conn.sasl_mechanism:
        lines += [f"sasl.mechanism={conn.sasl_mechanism}", f"sasl.jaas.config={_jaas(conn)}"]
    return "\n".join(lines) + "\n"


def role_principal(value: str) -> tuple[str, str]:
    """The type of a ``--principal ROLE=PRINCIPAL`` flag (a bad one is a usage error)."""
    name, sep, who = value.partition("=")
    if not sep or name not in ROLES:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected ROLE=PRINCIPAL, ROLE one of {', '.join(ROLES)}"
        )
    try:
        return name, principal(who)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def holders(flags: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """{role: [principal, ...]} of the flags; a role no flag names gets User:slmops-<role>."""
    out: dict[str, list[str]] = {}
    for name, who in flags:
        out.setdefault(name, []).append(who)
    return {r: out.get(r, [f"User:slmops-{r}"]) for r in ROLES}


def apply(
    conn: KafkaConnection,
    items: Sequence[Binding],
    *,
    java: str,
    libs: Path,
    remove: bool = False,
    progress: Callable[[str], None] = lambda _: None,
    timeout_s: float = 120.0,
) -> int:
    """Run AclCommand once per binding; returns how many ran. Stops at the first refusal."""
    commands = acl_arguments(items, remove=remove)
    with tempfile.TemporaryDirectory(prefix="slmops-acls-") as tmp:
        config = Path(tmp) / "client.properties"
        # The password is in it: readable by this user only, deleted with the directory.
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(client_properties(conn))
        for i, args in enumerate(commands, 1):
            progress(f"[{i}/{len(commands)}] {' '.join(args)}")
            cmd = [
                java,
                "-cp",
                f"{libs}/*",
                ACL_COMMAND,
                "--bootstrap-server",
                conn.bootstrap_servers,
                "--command-config",
                str(config),
                *args,
            ]
            try:
                done = subprocess.run(
                    cmd, capture_output=True, text=True, check=False, timeout=timeout_s
                )
            except subprocess.TimeoutExpired as exc:
                raise AclCommandError(
                    f"AclCommand did not finish in {timeout_s:.0f}s for: {' '.join(args)}"
                ) from exc
            if done.returncode != 0:
                said = (done.stdout + done.stderr).strip()[-1500:]
                raise AclCommandError(
                    f"AclCommand exited {done.returncode} for: {' '.join(args)}\n{said}"
                )
    return len(commands)


def _names(args: argparse.Namespace) -> Names:
    return Names(control_app_id=args.control_app_id, optimizer_group=args.optimizer_group)


def cmd_show(args: argparse.Namespace, connection: Callable[[argparse.Namespace], Any]) -> int:
    conn: KafkaConnection = connection(args)
    catalog = conn.catalog()
    names = _names(args)
    if args.format == "table":
        rows = [("role", "resource", "pattern", "operations"), *matrix_rows(catalog, names)]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)), row[3])
        return 0
    held = bindings(catalog, holders(args.principal), names)
    if args.format == "json":
        doc = {
            "roles": [
                {"role": r.name, "doc": r.doc, "grants": [_grant_json(g) for g in r.grants]}
                for r in roles(catalog, names)
            ],
            "bindings": [
                {"role": b.role, "principals": list(b.principals), **_grant_json(b.grant)}
                for b in held
            ],
        }
        print(json.dumps(doc, indent=2))
        return 0
    for argv in acl_arguments(held, remove=args.remove):
        print(
            "kafka-acls.sh --bootstrap-server "
            f"{conn.bootstrap_servers} --command-config admin.properties "
            + " ".join(_quote(a) for a in argv)
        )
    return 0


def _grant_json(g: Grant) -> dict[str, Any]:
    return {
        "resource": g.resource.value,
        "names": list(g.names),
        "pattern": g.pattern.value,
        "operations": list(g.operations),
    }


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " *;$") else arg


def cmd_apply(
    args: argparse.Namespace,
    connection: Callable[[argparse.Namespace], Any],
    local_kafka: Callable[[argparse.Namespace], Any],
    say: Callable[[str], None],
) -> int:
    conn: KafkaConnection = connection(args)
    kafka = local_kafka(args)
    kafka.fetch()  # the tools' jars, the same the local broker runs on
    held = bindings(conn.catalog(), holders(args.principal), _names(args))
    count = apply(
        conn, held, java=kafka.check_java(), libs=kafka.libs, remove=args.remove, progress=say
    )
    verb = "removed" if args.remove else "added"
    who = len({p for b in held for p in b.principals})
    print(f"{verb} {count} ACL bindings for {who} principals on {conn.bootstrap_servers}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--principal",
        action="append",
        type=role_principal,
        default=[],
        metavar="ROLE=PRINCIPAL",
        help=f"who holds a role ({', '.join(ROLES)}); repeatable; default User:slmops-<role>",
    )
    p.add_argument(
        "--control-app-id",
        default=None,
        help="the control workers' app id (SLMOPS_APP_ID there); default <prefix>-control",
    )
    p.add_argument(
        "--optimizer-group",
        default="slmops-optimizer",
        help="the optimizer workers' consumer group (default slmops-optimizer)",
    )
    p.add_argument("--remove", action="store_true", help="remove these ACLs instead of adding")
