"""The ``slmops`` command.

Each subcommand imports its component only when it runs, so ``slmops edge ...`` works with
just the ``[edge]`` extra installed and ``slmops --help`` is instant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slmops.errors import SlmopsError
from streams.kafka.arguments import non_negative_float, non_negative_int, positive_int

log = logging.getLogger("slmops")

EPILOG = """\
environment:
  SLMOPS_BOOTSTRAP_SERVERS  brokers (default: the local broker, 127.0.0.1:$SLMOPS_KAFKA_PORT)
  SLMOPS_TOPIC_PREFIX       prefix of every topic name (default: slmops)
  SLMOPS_KAFKA_PORT         port of the local broker (default: 9092; the controller uses +1)
  SLMOPS_KAFKA_HOME         the local broker's jars, data and log (default: .local/kafka)
  SLMOPS_SECURITY_PROTOCOL  PLAINTEXT (default), SSL, SASL_SSL or SASL_PLAINTEXT
  SLMOPS_SSL_CAFILE         PEM of the CA that signed the brokers' certificates
  SLMOPS_SSL_CERTFILE, SLMOPS_SSL_KEYFILE      client certificate and key (mutual TLS)
  SLMOPS_SSL_CHECK_HOSTNAME certificates must name the broker's host (default: true)
  SLMOPS_SASL_MECHANISM     PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
  SLMOPS_SASL_USERNAME, SLMOPS_SASL_PASSWORD  SASL credentials
  SLMOPS_DEBUG              1: show the traceback of an error, as --debug does

A mistake (a missing file, a bad value, no broker) is one "slmops: error: ..." line and exit
code 1; a bad command line is exit code 2. Commands that say more list their codes in --help.
Flags and positionals go in any order; every read command (models, devices, rollout status)
prints JSON lines with --output json (or --json) for scripts.

first steps:
  slmops kafka up            start the local Apache Kafka (fetches jars on first use)
  slmops topics create       create the catalog's topics
  slmops publish feedback F  publish events from a JSON file (or - for stdin)
  slmops validate telemetry F  check records as every consumer would, send nothing
  slmops tail feedback       print the events on a topic as JSON lines
"""


def _settings(args: argparse.Namespace) -> Any:

    from slmops.settings import CliSettings

    overrides: dict[str, Any] = {}
    # `is not None`: a 0 or an empty value given on purpose must reach the settings' checks,
    # not fall back to the default (`kafka down --port 0` would stop the broker on 9092).
    if getattr(args, "bootstrap_servers", None) is not None:
        overrides["bootstrap_servers"] = args.bootstrap_servers
    if getattr(args, "topic_prefix", None) is not None:
        overrides["topic_prefix"] = args.topic_prefix
    if getattr(args, "port", None) is not None:
        overrides["kafka_port"] = args.port
    return CliSettings.from_flags("slmops", **overrides)


def _connection(args: argparse.Namespace) -> Any:
    return _settings(args).connection()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- kafka


def _local_kafka(args: argparse.Namespace) -> Any:
    from slmops.local_kafka import LocalKafka

    settings = _settings(args)
    return LocalKafka(home=Path(settings.kafka_home), port=settings.kafka_port, progress=_say)


def cmd_kafka_up(args: argparse.Namespace) -> int:
    status = _local_kafka(args).up()
    print(f"Kafka running at {status.bootstrap_servers} (pid {status.pid}); log: {status.log_file}")
    return 0


def cmd_kafka_down(args: argparse.Namespace) -> int:
    kafka = _local_kafka(args)
    if kafka.down():
        print("Kafka stopped")
    else:
        print("Kafka was not running")
    if args.reset:
        kafka.reset()
        print(f"deleted {kafka.data_dir}")
    return 0


def cmd_kafka_status(args: argparse.Namespace) -> int:
    status = _local_kafka(args).status()
    state = "running" if status.running else "stopped"
    if status.running:
        state += ", answering" if status.answering else ", NOT answering"
    print(f"state:     {state}")
    print(f"bootstrap: {status.bootstrap_servers}")
    print(f"pid:       {status.pid or '-'}")
    print(f"log:       {status.log_file}")
    print(f"data:      {status.data_dir}")
    if status.note:
        print(f"note:      {status.note}")
    return 0 if status.running and status.answering else 3


# ----------------------------------------------------------------------------- topics


def cmd_topics_create(args: argparse.Namespace) -> int:
    from streams.kafka.admin import create_topics, wait_for_broker

    conn = _settings(args).connection()
    asyncio.run(wait_for_broker(conn, args.wait))
    outcomes = asyncio.run(create_topics(conn, replication_factor=args.replication_factor))
    failed = 0
    for o in outcomes:
        if o.error:
            failed += 1
            print(f"FAILED   {o.name}: {o.error}")
        else:
            print(f"{'created' if o.created else 'exists '}  {o.name}")
    return 1 if failed else 0


def cmd_topics_list(args: argparse.Namespace) -> int:
    from streams.kafka.admin import describe_topics, wait_for_broker

    conn = _settings(args).connection()
    catalog = conn.catalog()
    live: dict[str, Any] = {}
    if not args.offline:
        asyncio.run(wait_for_broker(conn, args.wait))
        live = asyncio.run(describe_topics(conn))
    rows = [("topic", "key", "value", "partitions", "policy", "retention", "on broker")]
    for spec in catalog:
        name = catalog.name(spec)
        retention = spec.configs.get("retention.ms")
        days = f"{int(retention) // 86_400_000} d" if retention else "-"
        there = "-" if args.offline else ("yes" if name in live else "MISSING")
        rows.append(
            (
                name,
                spec.key_doc,
                spec.event_type.SCHEMA,
                str(spec.partitions),
                spec.configs.get("cleanup.policy", "delete"),
                days,
                there,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


# ----------------------------------------------------------------------------- publish / tail


def cmd_publish(args: argparse.Namespace) -> int:
    from slmops import publish

    return publish.run(args, _settings(args).connection(), _say)


def cmd_validate(args: argparse.Namespace) -> int:
    from slmops import validate

    return validate.run(args, _say)


def cmd_tail(args: argparse.Namespace) -> int:
    from streams.events import to_json
    from streams.kafka.clients import EventConsumer, Undecodable

    conn = _settings(args).connection()
    catalog = conn.catalog()
    topic = catalog.name(catalog.resolve(args.topic))
    idle = None if args.follow else args.idle_timeout

    async def run() -> int:
        shown = 0
        async with EventConsumer(
            conn, [topic], name="tail", from_beginning=not args.new_only
        ) as consumer:
            async for record in consumer.raw_records(idle_timeout_s=idle):
                line: dict[str, Any] = {
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "key": record.key.decode("utf-8", "replace") if record.key else None,
                }
                if isinstance(record, Undecodable):
                    line["error"] = str(record.error)
                    line["value_hex"] = (record.value or b"")[:256].hex()
                else:
                    line["type"] = record.event.SCHEMA
                    line["event"] = to_json(record.event)
                print(json.dumps(line), flush=True)
                shown += 1
                if args.max and shown >= args.max:
                    break
        return shown

    shown = asyncio.run(run())
    _say(f"{shown} record(s) from {topic}")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from streams.events import EVENT_TYPES, SCHEMA_DIR, cli_name, default_codec

    if args.rules:
        from slmops.contract import rules_json

        sys.stdout.write(rules_json())
        return 0
    codec = default_codec()
    for name, cls in EVENT_TYPES.items():
        spec = codec.fingerprint(name)
        print(f"{cli_name(cls):22} {spec.hex()}  {SCHEMA_DIR / (name + '.avsc')}")
        for alias, (library, stands_for) in codec.aliases.items():
            if stands_for == spec:
                print(f"{'':22} {alias.hex()}  also accepted: what {library} writes")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from slmops.demo import DemoConfig, run_demo
    from slmops.demo.assistant.act import AssistantConfig

    config = DemoConfig(devices=args.devices or DemoConfig.devices, web_port=args.web_port)
    assistant = AssistantConfig(
        devices=args.assistant_devices or AssistantConfig.devices,
        adapt_steps=args.adapt_steps,
    )
    return run_demo(
        _settings(args),
        keep_running=args.keep_running,
        progress=_say,
        config=config,
        scenario=args.scenario,
        assistant=assistant,
    )


# ----------------------------------------------------------------------------- parser

# Each component adds its own subcommands through ``register(subparsers)``; these modules
# import only argparse at module level, so building the parser stays cheap and a component
# whose extra is not installed still shows in --help and fails with a clear message when run.
COMPONENT_CLIS = ("edge_runtime.cli", "optimizers.cli", "streams.control.cli")


def _register_component(module: str, sub: Any) -> None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return  # the component has no command line yet
        raise
    mod.register(sub)


# Written out rather than taken from CliSettings' fields: importing slmops.settings (the local
# broker's launcher, aiokafka's admin client) would slow every --help. tests/slmops/
# test_cli_help.py checks that each variable named here sets what its flag sets.
def _add_connection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bootstrap-servers",
        help="host:port[,host:port...] of the brokers; default: the local broker "
        "(env SLMOPS_BOOTSTRAP_SERVERS)",
    )
    p.add_argument(
        "--topic-prefix",
        help="prefix of every topic name; default slmops (env SLMOPS_TOPIC_PREFIX)",
    )


def _add_port(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--port",
        type=int,
        help="port of the local broker; its controller uses PORT+1 (env SLMOPS_KAFKA_PORT, "
        "default 9092)",
    )


KAFKA_EPILOG = """\
examples:
  slmops kafka up                 start it on 127.0.0.1:9092 (data under .local/kafka)
  SLMOPS_KAFKA_HOME=/tmp/k slmops kafka up --port 19092    a second, throwaway broker
"""
PUBLISH_DESCRIPTION = """\
Validate JSON events and publish them as Avro to their topic.

Every record is checked first: parsed, validated by the event contract, and measured against
the largest message the producer and the topic take. By default one refused record sends
nothing; --partial sends the valid ones. Refused lines are printed with their line number,
field and reason; progress and a final summary go to stderr."""
TAIL_EPILOG = """\
examples:
  slmops tail telemetry --max 10            the first 10 records, then stop
  slmops tail alerts --follow --new-only    wait for new alerts until Ctrl-C
"""
DEMO_EPILOG = """\
Two acts, each on its own topic prefix: the intent classifier (drift, re-optimization, canary,
the rollback of a bad build; about five minutes), then the assistant (a generative SLM adapted
to one cohort's drift by a LoRA adapter; about ten minutes, plus five the first time, when it
builds SmolLM2 and v1's adapter and keeps them under .local/models/demo-assistant).
Starts the local broker when SLMOPS_BOOTSTRAP_SERVERS is unset. Exits 0 only if every
expectation of every act held.
examples:
  slmops demo
  slmops demo --scenario classifier --devices 8 --keep-running
  slmops demo --scenario assistant
"""


class AnyOrderParser(argparse.ArgumentParser):
    """Flags and positionals in any order (``publish feedback --dry-run FILE``).

    Plain argparse takes an optional positional as absent once a flag follows the positionals
    before it, and then refuses the positional after the flag. A command's own parser (one
    without subcommands) parses intermixed instead; the parsers of every subcommand are made
    of this class, since argparse builds them with the class of their parent.
    """

    _intermixing = False

    def parse_known_args(  # type: ignore[override]  # typeshed's overloads, one behaviour
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        nested = any(isinstance(a, argparse._SubParsersAction) for a in self._actions)
        if nested or self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    parser = AnyOrderParser(
        prog="slmops",
        description="Operate small language models on fleets of edge devices over Apache Kafka.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error too (env SLMOPS_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        parent: Any,
        name: str,
        func: Callable[[argparse.Namespace], int],
        help_: str,
        *,
        description: str | None = None,
        epilog: str | None = None,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name,
            help=help_,
            description=description or help_,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    kafka = sub.add_parser(
        "kafka",
        help="run the local Apache Kafka broker (KRaft, one node)",
        description="Run the local Apache Kafka broker: one KRaft node on 127.0.0.1, its jars, "
        "data and log under SLMOPS_KAFKA_HOME (default .local/kafka).",
        epilog=KAFKA_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ksub = kafka.add_subparsers(dest="kafka_command", metavar="ACTION", required=True)
    p = add(ksub, "up", cmd_kafka_up, "start the broker (idempotent); fetches jars on first use")
    _add_port(p)
    p = add(ksub, "down", cmd_kafka_down, "stop the broker (SIGTERM, then SIGKILL if it hangs)")
    _add_port(p)
    p.add_argument("--reset", action="store_true", help="also delete its data")
    p = add(
        ksub,
        "status",
        cmd_kafka_status,
        "is it running and answering; where is its log (exit 3 when not running)",
    )
    _add_port(p)

    topics = sub.add_parser(
        "topics",
        help="the topic catalog",
        description="Create or list the catalog's topics (names, keys, partitions, retention).",
    )
    tsub = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    p = add(
        tsub,
        "create",
        cmd_topics_create,
        "create every catalog topic with its configs (idempotent)",
        epilog="example:\n  slmops topics create --topic-prefix staging --replication-factor 3",
    )
    _add_connection(p)
    p.add_argument(
        "--replication-factor",
        type=positive_int,
        default=1,
        help="replicas of each topic (default 1)",
    )
    p.add_argument(
        "--wait",
        type=non_negative_float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the broker to answer (default 30)",
    )
    p = add(tsub, "list", cmd_topics_list, "show the catalog and which topics exist")
    _add_connection(p)
    p.add_argument("--offline", action="store_true", help="do not ask the broker")
    p.add_argument(
        "--wait",
        type=non_negative_float,
        default=10.0,
        metavar="S",
        help="seconds to wait for the broker to answer (default 10)",
    )

    from slmops import publish

    p = add(
        sub,
        "publish",
        cmd_publish,
        "validate JSON events, then publish them as Avro (all or nothing by default)",
        description=PUBLISH_DESCRIPTION,
        epilog=publish.EXAMPLES + "\n" + publish.EXIT_CODES,
    )
    publish.add_arguments(p)
    _add_connection(p)

    from slmops import validate

    p = add(
        sub,
        "validate",
        cmd_validate,
        "check JSON records against the whole contract (the schema, its limits and what the "
        "control worker refuses); sends nothing, needs no broker",
        epilog="example:\n  slmops validate telemetry windows.jsonl\n\n" + validate.EXIT_CODES,
    )
    validate.add_arguments(p)

    p = add(
        sub,
        "tail",
        cmd_tail,
        "print a topic's events as JSON lines (undecodable ones too, with why)",
        epilog=TAIL_EPILOG,
    )
    p.add_argument("topic", help="full or short topic name, e.g. telemetry")
    p.add_argument(
        "--max",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="stop after N records (default 0: no limit)",
    )
    p.add_argument("--follow", "-f", action="store_true", help="keep waiting for new records")
    p.add_argument("--new-only", action="store_true", help="start at the end, not the beginning")
    p.add_argument(
        "--idle-timeout",
        type=non_negative_float,
        default=3.0,
        metavar="S",
        help="stop after S seconds without a record (default 3; ignored with --follow)",
    )
    _add_connection(p)

    from slmops import acls

    acl = sub.add_parser(
        "acls",
        help="the Kafka ACLs of each role: show them, or apply them to a cluster",
        description="The Kafka ACLs each role needs (device, publisher, optimizer, controller, "
        "operator) and nothing more, computed from the topic catalog.",
        epilog=acls.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    asub = acl.add_subparsers(dest="acls_command", metavar="ACTION", required=True)
    p = add(
        asub,
        "show",
        lambda a: acls.cmd_show(a, _connection),
        "print the matrix (table), kafka-acls.sh commands or JSON",
        epilog=acls.EPILOG,
    )
    p.add_argument(
        "--format",
        choices=("table", "commands", "json"),
        default="table",
        help="table: role by role (default); commands: kafka-acls.sh lines for the principals; "
        "json: both, for scripts",
    )
    acls.add_arguments(p)
    _add_connection(p)
    p = add(
        asub,
        "apply",
        lambda a: acls.cmd_apply(a, _connection, _local_kafka, _say),
        "add (or --remove) the ACLs on the cluster of SLMOPS_BOOTSTRAP_SERVERS, as an admin",
        epilog=acls.EPILOG,
    )
    acls.add_arguments(p)
    _add_connection(p)
    _add_port(p)

    p = add(sub, "schemas", cmd_schemas, "list event types, their fingerprints and .avsc files")
    p.add_argument(
        "--rules",
        action="store_true",
        help="print the contract's rules beyond the types (limits, shared histogram bounds) as "
        "JSON: streams/events/schemas/rules.json",
    )

    from slmops import rollouts

    rollouts.register(sub, lambda a: _settings(a).connection(), _add_connection)
    for module in COMPONENT_CLIS:
        _register_component(module, sub)

    p = add(
        sub,
        "demo",
        cmd_demo,
        "the closed loop end to end, classifier then assistant: drift, re-optimization, "
        "canary, rollback, a cohort's adapter (about fifteen minutes)",
        epilog=DEMO_EPILOG,
    )
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="afterwards keep the fleet, the workers and the status page running until Ctrl-C",
    )
    p.add_argument(
        "--scenario",
        choices=("all", "classifier", "assistant"),
        default="all",
        help="all: both acts in turn (default, what make demo runs); classifier: the intent "
        "classifier's drift, re-optimization and rollback; assistant: SmolLM2 adapted to one "
        "cohort's drift by a LoRA adapter alone",
    )
    p.add_argument(
        "--devices",
        type=positive_int,
        default=None,
        help="simulated edge runtimes of the classifier act (default 16)",
    )
    p.add_argument(
        "--assistant-devices",
        type=positive_int,
        default=None,
        help="simulated edge runtimes of the assistant act, half per cohort (default 6)",
    )
    p.add_argument(
        "--adapt-steps",
        type=positive_int,
        default=80,
        help="assistant: LoRA training steps of the cohort's adapter (default 80)",
    )
    p.add_argument(
        "--web-port",
        type=positive_int,
        default=6066,
        help="control worker's web port (default 6066)",
    )
    _add_connection(p)
    _add_port(p)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can fix: each package's root and the wrapped Kafka errors under
    StreamsError. Anything else is a bug and keeps its traceback."""
    from edge_runtime.errors import EdgeRuntimeError
    from optimizers.errors import OptimizerError
    from streams.events.errors import StreamsError

    return (SlmopsError, StreamsError, OptimizerError, EdgeRuntimeError)


def _debugging(args: argparse.Namespace) -> bool:
    return bool(args.debug) or os.environ.get("SLMOPS_DEBUG", "").lower() in ("1", "true", "yes")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a user error is one ``slmops: error:`` line and exit code 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    user_errors = _user_errors()
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`slmops ... | head`): what it did not read is not an error.
        # Python would try to flush stdout again at exit: point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a program killed by the signal reports
    except user_errors as exc:
        if _debugging(args):
            raise
        _say(f"slmops: error: {exc}")
        return 1
    return code
