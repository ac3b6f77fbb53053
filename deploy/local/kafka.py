"""Kafka: a single-node KRaft broker+controller run straight from the Maven Central jars.

* :class:`BrokerSettings`: what only this broker needs (the jar versions, the JVM heap).
* :func:`ensure_kafka_jars` copies ``kafka_2.13`` and a log4j2 binding into
  ``<home>/kafka/jars-<version>/`` with Maven (``deploy/local/pom.xml``), once.
* :class:`Kafka` writes ``server.properties`` into ``<run_dir>/kafka/``, formats the storage once
  (``kafka.tools.StorageTool format --standalone``), runs ``kafka.Kafka`` in a small JVM, is ready
  when a metadata round trip with kafka-python works, and then creates the topics of
  ``settings.topics``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.files import write_text_atomic
from shared.kafka_io import ensure_topics, make_admin
from shared.settings import Settings

from . import process
from .component import Component, ComponentStatus

if TYPE_CHECKING:
    from kafka import KafkaAdminClient

log = logging.getLogger(__name__)

POM = Path(__file__).resolve().parent / "pom.xml"
LOG4J2_CONFIG = process.TEMPLATES / "kafka-log4j2.xml"
_COMPLETE = ".complete"
_CLUSTER_NAMESPACE = uuid.UUID("6f0d3c2e-5b1a-4a8e-9c57-3a1e2f9b7d10")

RETENTION_HOURS = 24
"""Local stack: a day of messages is plenty (keeps the disk small)."""

JVM_FLAGS: tuple[str, ...] = (
    "-XX:+UseSerialGC",  # 2 cores: no parallel GC threads
    "-XX:TieredStopAtLevel=1",  # C1 only: halves start-up on 2 cores (8s -> 4s); ample for local load
    "-XX:ReservedCodeCacheSize=64m",
    "-XX:MaxMetaspaceSize=128m",
    "-Xss512k",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Dfile.encoding=UTF-8",
)


class BrokerSettings(BaseSettings):
    """What only the local stack's broker needs: the jars Maven fetches for it, and its JVM heap.

    Read like :class:`shared.settings.Settings`, from the defaults, ``.env`` and the environment,
    under the same names as the rest of the Kafka settings: ``EMOTION_KAFKA__HEAP=1g``,
    ``EMOTION_KAFKA__VERSION``, ``EMOTION_KAFKA__LOG4J_VERSION``.  The one place these versions are
    written (``pom.xml`` is given them on Maven's command line).
    """

    model_config = SettingsConfigDict(env_prefix="EMOTION_KAFKA__", env_file=".env", extra="ignore")

    heap: str = "512m"
    """The broker JVM's ``-Xms`` and ``-Xmx``."""
    version: str = "4.3.1"
    """Kafka (``org.apache.kafka:kafka_2.13``) from Maven Central."""
    log4j_version: str = "2.25.4"
    """log4j2 (``log4j-slf4j-impl``, ``log4j-api``, ``log4j-core``): the version Kafka is built against."""


def jars_dir(settings: Settings, broker: BrokerSettings | None = None) -> Path:
    """Where the Kafka jars of ``broker.version`` live (shared by every stack of a home)."""
    broker = broker or BrokerSettings()
    return settings.home / "kafka" / f"jars-{broker.version}"


def ensure_kafka_jars(settings: Settings, broker: BrokerSettings | None = None) -> Path:
    """Copy the Kafka (and log4j2) jars from Maven Central into :func:`jars_dir`; idempotent.

    A fast no-op when the directory is complete.  Needs ``mvn`` and ``java`` on PATH.
    """
    k = broker or BrokerSettings()
    target = jars_dir(settings, k)
    stamp = f"kafka={k.version} log4j={k.log4j_version}"
    marker = target / _COMPLETE
    if marker.exists() and marker.read_text().splitlines()[:1] == [stamp]:
        return target
    with process.file_lock(target.parent / ".install.lock"):
        if marker.exists() and marker.read_text().splitlines()[:1] == [stamp]:
            return target  # another process just did it
        _fetch_jars(k, target, stamp)
    return target


def _fetch_jars(k: BrokerSettings, target: Path, stamp: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise process.StackError("Maven (mvn) is not installed: run deploy/local/install-system.sh")
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("fetching Kafka %s jars (log4j %s) with Maven into %s", k.version, k.log4j_version, target)
    process.run_checked(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            f"-Dkafka.version={k.version}",
            f"-Dlog4j.version={k.log4j_version}",
        ],
        what=f"mvn dependency:copy-dependencies (kafka {k.version})",
    )
    if not any(tmp.glob(f"kafka_2.13-{k.version}.jar")):
        raise process.StackError(f"Maven ran but {tmp} holds no kafka_2.13-{k.version}.jar")
    (tmp / _COMPLETE).write_text("\n".join([stamp, *sorted(p.name for p in tmp.glob("*.jar"))]) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def cluster_id(settings: Settings) -> str:
    """Kafka's 22-character URL-safe base64 cluster id, derived from ``settings.kafka.cluster_id``."""
    raw = uuid.uuid5(_CLUSTER_NAMESPACE, settings.kafka.cluster_id).bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class Listeners:
    """The listener block of ``server.properties``.

    ``CLIENT`` (services, tools, and the broker's own inter-broker traffic) speaks
    ``client_protocol``: SASL/SCRAM by default, its users' credentials created in the metadata log
    when the storage is formatted (KRaft keeps SCRAM credentials there).  ``CONTROLLER`` (the KRaft
    quorum, which Kafka 4 also lets admin tools bootstrap from) takes SASL/PLAIN with one user, the
    broker itself: SCRAM cannot guard a controller, whose credentials would live in the log it serves.
    """

    host: str
    port: int
    controller_port: int
    client_protocol: str = "SASL_PLAINTEXT"
    mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: str = ""
    controller_password: str = ""

    @property
    def secured(self) -> bool:
        return self.client_protocol.startswith("SASL")

    def values(self) -> dict[str, str]:
        client = f"CLIENT://{self.host}:{self.port}"
        controller = f"CONTROLLER://{self.host}:{self.controller_port}"
        return {
            "listeners": f"{client},{controller}",
            "advertised_listeners": f"{client},{controller}",
            "protocol_map": f"CLIENT:{self.client_protocol},CONTROLLER:{'SASL_PLAINTEXT' if self.secured else 'PLAINTEXT'}",
            "inter_broker_listener": "CLIENT",
            "security_extra": self.security_lines(),
        }

    def security_lines(self) -> str:
        if not self.secured:
            return "# no authentication: settings.kafka.security_protocol is PLAINTEXT"
        scram = self.mechanism.lower()
        return "\n".join(
            [
                f"sasl.enabled.mechanisms={self.mechanism}",
                f"sasl.mechanism.inter.broker.protocol={self.mechanism}",
                f"listener.name.client.{scram}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
                f"required username={_jaas(self.username)} password={_jaas(self.password)};",
                "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
                "sasl.mechanism.controller.protocol=PLAIN",
                "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
                f'required username="controller" password={_jaas(self.controller_password)} '
                f"user_controller={_jaas(self.controller_password)};",
            ]
        )

    def scram_user(self) -> str:
        """The ``StorageTool format --add-scram`` argument that creates the client user."""
        return f"{self.mechanism}=[name={self.username},password={self.password}]"

    def fingerprint(self) -> str:
        """What the formatted storage's credentials were made from (hashed: no secret on disk twice)."""
        return hashlib.sha256(
            f"{self.client_protocol}|{self.mechanism}|{self.username}|{self.password}".encode()
        ).hexdigest()


def _jaas(value: str) -> str:
    """A JAAS option value (double-quoted)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Kafka(Component):
    """Single-node KRaft Kafka (``process.roles=broker,controller``)."""

    name = "kafka"
    stop_timeout_s = 30.0

    def __init__(self, settings: Settings, broker: BrokerSettings | None = None) -> None:
        super().__init__(settings)
        self.broker = broker or BrokerSettings()

    @property
    def host(self) -> str:
        return self.settings.kafka.host

    def ports(self) -> dict[str, int]:
        return {"client": self.settings.kafka.port, "controller": self.settings.kafka.controller_port}

    @property
    def config_file(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def listeners(self) -> Listeners:
        k, s = self.settings.kafka, self.settings
        if not k.security_protocol.startswith("SASL"):
            return Listeners(k.host, k.port, k.controller_port, client_protocol=k.security_protocol)
        return Listeners(
            k.host,
            k.port,
            k.controller_port,
            k.security_protocol,
            k.sasl_mechanism,
            k.username,
            s.kafka_password,
            s.kafka_controller_password,
        )

    @property
    def credentials_file(self) -> Path:
        return self.workdir / "credentials.sha256"

    def _java(self, *args: str, heap: str | None = None) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise process.StackError("java is not installed: run deploy/local/install-system.sh")
        heap = heap or self.broker.heap
        return [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            "-cp",
            f"{ensure_kafka_jars(self.settings, self.broker)}/*",
            *args,
        ]

    def prepare(self) -> None:
        k = self.settings.kafka
        values = {
            "host": k.host,
            "controller_port": k.controller_port,
            "log_dirs": self.data_dir,
            "num_partitions": k.num_partitions,
            "internal_partitions": k.num_partitions,
            "max_message_bytes": k.max_message_bytes,
            "retention_hours": RETENTION_HOURS,
            **self.listeners().values(),
        }
        listeners = self.listeners()
        write_text_atomic(self.config_file, process.render_template("kafka-server.properties.tmpl", values), mode=0o600)
        if not (self.data_dir / "meta.properties").exists():
            cid = cluster_id(self.settings)
            log.info("formatting Kafka storage %s (cluster id %s)", self.data_dir, cid)
            scram = ["--add-scram", listeners.scram_user()] if listeners.secured else []
            process.run_checked(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cid,
                    "-c",
                    str(self.config_file),
                    "--standalone",
                    *scram,
                    heap="128m",
                ),
                what="kafka storage format",
                timeout_s=120,
            )
            write_text_atomic(self.credentials_file, listeners.fingerprint() + "\n", mode=0o600)
        elif (
            self.credentials_file.read_text().strip() if self.credentials_file.exists() else ""
        ) != listeners.fingerprint():
            raise process.StackError(
                f"Kafka's storage {self.data_dir} was formatted with other credentials than the settings give "
                f"(user {self.settings.kafka.username!r}, {self.settings.kafka.security_protocol}): give the password "
                f"it was made with, or stop the stack and delete {self.workdir} to format it anew (its messages are lost)"
            )

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.config_file))

    def _admin(self) -> KafkaAdminClient:
        return make_admin(self.settings, request_timeout_ms=5000, bootstrap_timeout_ms=3000)

    def healthy(self) -> bool:
        k = self.settings.kafka
        if not process.accepts_connections(k.host, k.port):  # spares kafka-python's bootstrap errors
            return False
        admin = self._admin()
        try:
            cluster = admin.describe_cluster()
            return bool(cluster.get("brokers"))
        finally:
            admin.close()

    def after_ready(self) -> None:
        self.ensure_topics()

    def status(self) -> ComponentStatus:
        st = super().status()
        st.extra = {
            "version": self.broker.version,
            "cluster_id": cluster_id(self.settings),
            "bootstrap": self.settings.kafka.bootstrap,
        }
        return st

    def ensure_topics(self) -> list[str]:
        """Create the missing topics of ``settings.topics``; returns the names created."""
        return ensure_topics(self.settings)
