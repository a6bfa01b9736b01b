"""The embedded default broker: Apache Kafka 4.x in KRaft mode on 127.0.0.1, one node.

Jars come from Maven Central through ``deploy/local/pom.xml`` and the machine's ``mvn``; the
broker runs on the machine's Java 17+. Everything it writes lives under one home directory
(default ``.local/kafka`` in the checkout): ``libs/``, ``data/``, ``server.properties``,
``broker.log`` and ``broker.pid``. Production users point the same code at their own cluster.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import errno
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from slmops.errors import LocalKafkaError
from streams.kafka.admin import wait_for_broker
from streams.kafka.errors import KafkaUnavailableError

log = logging.getLogger(__name__)

CHECKOUT = Path(__file__).resolve().parent.parent
POM = CHECKOUT / "deploy" / "local" / "pom.xml"
LOG4J = CHECKOUT / "deploy" / "local" / "log4j2.properties"
MIN_JAVA = 17


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerStatus:
    running: bool
    answering: bool
    pid: int | None
    bootstrap_servers: str
    log_file: Path
    data_dir: Path
    note: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class LocalTls:
    """Extra TLS listeners, to try and test client security settings against a real broker.

    ``keystore_pem`` holds the broker's unencrypted PKCS#8 private key followed by its
    certificate chain. ``scram_users`` (name -> password) get SCRAM-SHA-256 credentials at
    format time, for the SASL_SSL listener. With ``authorizer`` the broker runs Kafka's
    StandardAuthorizer and denies what no ACL allows; the plaintext, SSL and controller
    listeners, which authenticate nobody, are the super user ``User:ANONYMOUS`` (the local
    administrator's way in), so only the SASL_SSL listener's users are held to ACLs.
    """

    keystore_pem: Path
    ssl_port: int
    sasl_ssl_port: int | None = None
    scram_users: Mapping[str, str] = dataclasses.field(default_factory=dict)
    authorizer: bool = False


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64, never starting with ``-``.

    ``kafka-storage format -t`` would read an id starting with ``-`` as an option and fail the
    format (one id in 64 does); Kafka's own ``Uuid.randomUuid`` skips such ids the same way.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclasses.dataclass(frozen=True, slots=True)
class LocalKafka:
    """One local broker+controller; ``up`` and ``down`` are idempotent."""

    home: Path
    port: int = 9092
    controller_port: int | None = None
    heap: str = "512m"
    start_timeout_s: float = 90.0
    progress: Callable[[str], None] = lambda _msg: None
    libs_dir: Path | None = None
    tls: LocalTls | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def _controller_port(self) -> int:
        return self.controller_port or self.port + 1

    @property
    def libs(self) -> Path:
        return self.libs_dir or self.home / "libs"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    # ------------------------------------------------------------------ fetch and format

    def check_java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise LocalKafkaError(
                "java not found on PATH; Kafka needs Java 17+ "
                "(Debian: apt-get install openjdk-17-jre-headless)"
            )
        out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
        match = re.search(r'version "(\d+)', out.stderr + out.stdout)
        if not match or int(match.group(1)) < MIN_JAVA:
            raise LocalKafkaError(
                f"Kafka 4 needs Java {MIN_JAVA}+; `java -version` said: {out.stderr.strip()}"
            )
        return java

    def fetch(self) -> None:
        """Copy the broker's jars from Maven Central into ``libs/`` unless already there."""
        marker = self.libs / ".complete"
        if marker.exists() and marker.read_text() == POM.read_text():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalKafkaError(
                "mvn not found on PATH; it fetches the Kafka jars (Debian: apt-get install maven)"
            )
        if not POM.exists():
            raise LocalKafkaError(f"{POM} is missing: run from a slmops checkout")
        self.progress("fetching Apache Kafka jars from Maven Central (first run only)...")
        staging = self.home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LocalKafkaError(
                f"mvn could not fetch the Kafka jars (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-2000:]}"
            )
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        marker.write_text(POM.read_text())

    def _listeners(self) -> tuple[list[str], list[str]]:
        """(listeners, advertised listeners) of the broker, controller excluded."""
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        if self.tls is not None:
            listeners.append(f"SSL://127.0.0.1:{self.tls.ssl_port}")
            if self.tls.sasl_ssl_port is not None:
                listeners.append(f"SASL_SSL://127.0.0.1:{self.tls.sasl_ssl_port}")
        return listeners, list(listeners)

    def _security_config(self) -> list[str]:
        if self.tls is None:
            return []
        lines = [
            "listener.security.protocol.map="
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.tls.keystore_pem}",
        ]
        if self.tls.sasl_ssl_port is not None:
            lines += [
                "sasl.enabled.mechanisms=SCRAM-SHA-256",
                "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            ]
        if self.tls.authorizer:
            lines += [
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users=User:ANONYMOUS",
                "allow.everyone.if.no.acl.found=false",
            ]
        return lines

    def _write_config(self) -> None:
        listeners, advertised = self._listeners()
        security = self._security_config()
        protocol_map = (
            []
            if security
            else ["listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"]
        )
        self.config_file.write_text(
            "\n".join(
                [
                    "# Written by slmops on every start: pass options instead of editing it.",
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self._controller_port}",
                    "listeners="
                    + ",".join([*listeners, f"CONTROLLER://127.0.0.1:{self._controller_port}"]),
                    "advertised.listeners=" + ",".join(advertised),
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    *protocol_map,
                    *security,
                    f"log.dirs={self.data_dir}",
                    "num.partitions=3",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    # One node: no reason to wait for more members before the first rebalance.
                    "group.initial.rebalance.delay.ms=0",
                    # Topics come from the catalog; a typo must not create a stray topic.
                    "auto.create.topics.enable=false",
                    "log.cleaner.backoff.ms=1000",
                    "",
                ]
            )
        )

    def _format(self, java: str) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        self.progress("formatting KRaft storage...")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = new_cluster_id()
        cmd = [
            java,
            "-cp",
            f"{self.libs}/*",
            f"-Dlog4j2.configurationFile={LOG4J}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.config_file),
        ]
        for name, password in (self.tls.scram_users if self.tls else {}).items():
            cmd += ["--add-scram", f"SCRAM-SHA-256=[name={name},password={password}]"]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LocalKafkaError(
                f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}"
            )

    # ------------------------------------------------------------------ process control

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # A zombie child still "exists"; treat it as gone.
        with contextlib.suppress(FileNotFoundError):
            if " Z " in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:3]:
                return False
        return True

    def _port_free(self, port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return False
                raise
        return True

    def _answering(self, timeout_s: float) -> bool:
        try:
            asyncio.run(wait_for_broker(self.bootstrap_servers, timeout_s))
        except KafkaUnavailableError:
            return False
        return True

    def status(self) -> BrokerStatus:
        pid = self._read_pid()
        running = pid is not None and self._alive(pid)
        note = ""
        if pid is not None and not running:
            note = f"stale pid file {self.pid_file} (process {pid} is gone)"
        answering = running and self._answering(3.0)
        return BrokerStatus(
            running=running,
            answering=answering,
            pid=pid if running else None,
            bootstrap_servers=self.bootstrap_servers,
            log_file=self.log_file,
            data_dir=self.data_dir,
            note=note,
        )

    def up(self) -> BrokerStatus:
        """Start the broker unless it already runs; return once it answers metadata requests."""
        self.home.mkdir(parents=True, exist_ok=True)
        pid = self._read_pid()
        if pid is not None:
            if self._alive(pid):
                if self._answering(self.start_timeout_s):
                    self.progress(f"broker already running (pid {pid}) at {self.bootstrap_servers}")
                    return self.status()
                raise LocalKafkaError(
                    f"broker process {pid} runs but does not answer at {self.bootstrap_servers}; "
                    f"see {self.log_file}, or `slmops kafka down` and try again"
                )
            self.progress(f"removing stale pid file (process {pid} is gone)")
            self.pid_file.unlink()
        extra_ports = [] if self.tls is None else [self.tls.ssl_port, self.tls.sasl_ssl_port]
        for port in (self.port, self._controller_port, *(p for p in extra_ports if p)):
            if not self._port_free(port):
                raise LocalKafkaError(
                    f"port {port} on 127.0.0.1 is already in use by another process; stop it or "
                    "choose other ports with --port (SLMOPS_KAFKA_PORT); the controller uses port+1"
                )
        java = self.check_java()
        self.fetch()
        self._write_config()
        self._format(java)
        self.progress(f"starting Kafka on {self.bootstrap_servers} (log: {self.log_file})...")
        started = time.monotonic()
        cmd = [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J}",
            "-cp",
            f"{self.libs}/*",
            "kafka.Kafka",
            str(self.config_file),
        ]
        pid = self._spawn_detached(cmd)
        self.pid_file.write_text(f"{pid}\n")
        deadline = started + self.start_timeout_s
        while time.monotonic() < deadline:
            if not self._alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise LocalKafkaError(
                    f"Kafka exited during start-up; last lines of "
                    f"{self.log_file}:\n{self._tail_log()}"
                )
            if self._answering(2.0):
                self.progress(f"Kafka is up after {time.monotonic() - started:.1f}s")
                return self.status()
        self.down()
        raise LocalKafkaError(
            f"Kafka did not answer within {self.start_timeout_s:.0f}s; last lines of "
            f"{self.log_file}:\n{self._tail_log()}"
        )

    def _spawn_detached(self, cmd: list[str]) -> int:
        """Start the broker as a daemon (not our child) and return its pid.

        The broker outlives the command that started it; a shell that backgrounds it and exits
        at once hands it to init, so no process of ours holds a child it will never wait for.
        """
        script = '"$@" >>"$SLMOPS_BROKER_LOG" 2>&1 </dev/null & echo $!'
        result = subprocess.run(
            ["/bin/sh", "-c", script, "slmops-kafka", *cmd],
            env={**os.environ, "SLMOPS_BROKER_LOG": str(self.log_file)},
            capture_output=True,
            text=True,
            check=False,
            start_new_session=True,
        )
        if result.returncode != 0 or not result.stdout.strip().isdigit():
            raise LocalKafkaError(f"could not start Kafka: {result.stderr.strip()}")
        return int(result.stdout.strip())

    def down(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker; returns whether one was running."""
        pid = self._read_pid()
        if pid is None or not self._alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return False
        self.progress(f"stopping Kafka (pid {pid})...")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.2)
        if self._alive(pid):
            log.warning("Kafka did not stop within %.0fs; killing pid=%s", timeout_s, pid)
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def reset(self) -> None:
        """Stop the broker and delete its data (jars stay)."""
        self.down()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _tail_log(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
