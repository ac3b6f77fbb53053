"""The real local stack: Kafka (KRaft), Redis, Triton (Python backend) and Prometheus.

One stack is brought up for the module on free ports in 29000-29999 under a temporary home
(never the default ports, never 39000-39999), exercised for real, and torn down.  The cold start
time and the memory per component are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
import logging
import random
import textwrap
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from deploy.local import stack
from deploy.local.process import PidRecord, group_members, is_alive, port_is_free
from shared.metrics import FileScrapeTargets
from shared.kafka_io import client_options
from shared.settings import Settings, load_settings

pytestmark = [
    pytest.mark.integration,
    # kafka-python 3.0 loads its protocol schemas with the deprecated importlib.resources API
    pytest.mark.filterwarnings("ignore:(read|open)_text is deprecated:DeprecationWarning"),
]

PORT_RANGE = (29000, 29999)
N_PORTS = 16  # per stack: kafka 2, redis 1, triton 3, prometheus 1; two stacks + a metrics exporter + spare


def _free_ports(n: int) -> list[int]:
    """``n`` consecutive free ports inside :data:`PORT_RANGE`."""
    lo, hi = PORT_RANGE
    for _ in range(200):
        base = random.randint(lo, hi - n)
        ports = list(range(base, base + n))
        if all(port_is_free("127.0.0.1", p) for p in ports):
            return ports
    raise RuntimeError(f"no {n} free consecutive ports in {PORT_RANGE}")


@dataclass
class RunningStack:
    settings: Settings
    cold_start_s: float
    first_status: stack.StackStatus
    spare_port: int
    second_stack_ports: list[int]


def _settings(home: Path, ports: list[int], name: str = "itest") -> Settings:
    return load_settings(
        home=home,
        stack_name=name,
        kafka={"port": ports[0], "controller_port": ports[1]},
        redis={"port": ports[2]},
        triton={
            "http_port": ports[3],
            "grpc_port": ports[4],
            "metrics_port": ports[5],
            "model_repository": home / "models",
        },
        prometheus={"port": ports[6], "scrape_interval_s": 1.0},
    )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("stack-home")
    ports = _free_ports(N_PORTS)
    settings = _settings(home, ports)
    stack.install(settings)  # apt only when something is missing; Kafka jars into the tmp home
    t0 = time.monotonic()
    try:
        first = stack.up(settings, timeout_s=300)
        cold = time.monotonic() - t0
        print(f"\n[stack] cold start (nothing -> all healthy): {cold:.1f}s")
        print(first.table())
        yield RunningStack(settings, cold, first, ports[14], ports[7:14])
    finally:
        stack.down(settings)


def _pids(st: stack.StackStatus) -> dict[str, int | None]:
    return {c.name: c.pid for c in st.components}


# ---- Kafka ---------------------------------------------------------------------------------


def test_kafka_metadata_and_topics(running: RunningStack) -> None:
    from kafka import KafkaAdminClient

    s = running.settings
    admin = KafkaAdminClient(**{**client_options(s), "request_timeout_ms": 10_000})
    try:
        cluster = admin.describe_cluster()
        assert len(cluster["brokers"]) == 1
        topics = set(admin.list_topics())
        assert set(s.topics.all()) <= topics
        described = {t["name"]: t for t in admin.describe_topics(s.topics.all())}
        for name in s.topics.all():
            assert len(described[name]["partitions"]) == s.kafka.num_partitions
    finally:
        admin.close()


def test_kafka_produce_consume(running: RunningStack) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    s = running.settings
    topic = s.topics.utterances
    value = f"hello-{uuid.uuid4()}".encode()
    producer = KafkaProducer(**client_options(s), max_request_size=s.kafka.max_message_bytes)
    try:
        meta = producer.send(topic, key=b"call-1", value=value).get(timeout=30)
        assert meta.topic == topic
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic,
        **client_options(s),
        group_id=f"itest-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        deadline = time.monotonic() + 60
        seen = False
        while not seen and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                seen = seen or any(r.value == value for r in records)
        assert seen, "produced message not consumed within 60s"
    finally:
        consumer.close()


def test_kafka_large_message(running: RunningStack) -> None:
    """Audio chunks: messages up to settings.kafka.max_message_bytes are accepted."""
    from kafka import KafkaProducer

    s = running.settings
    producer = KafkaProducer(**client_options(s), max_request_size=s.kafka.max_message_bytes)
    try:
        producer.send(s.topics.audio, value=b"\0" * (2 * 1024 * 1024)).get(timeout=30)
    finally:
        producer.close()


def _librdkafka_errors(settings, **config) -> list:
    """Ask the broker for its topics with a second client, confluent-kafka (librdkafka), configured
    with ``config``; the errors the client reported (an empty list: it got through)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list = []
    admin = AdminClient(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "error_cb": errors.append,
            "logger": logging.getLogger("librdkafka"),
            **config,
        }
    )
    try:
        admin.list_topics(timeout=8)
    except KafkaException as exc:
        errors.append(exc.args[0])
    admin.poll(1)  # serves the error callbacks queued meanwhile
    return errors


SCRAM = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512"}


@pytest.mark.parametrize(
    "credentials, refusal",
    [
        pytest.param({}, "_TRANSPORT", id="anonymous"),
        pytest.param(
            {**SCRAM, "sasl.username": "emotion", "sasl.password": "not-the-password"},
            "_AUTHENTICATION",
            id="wrong-password",
        ),
        pytest.param(
            {**SCRAM, "sasl.username": "intruder", "sasl.password": "x"}, "_AUTHENTICATION", id="unknown-user"
        ),
    ],
)
def test_kafka_requires_scram_credentials(running: RunningStack, credentials: dict, refusal: str) -> None:
    """The client listener speaks SASL/SCRAM only: no metadata without the user's password. The same
    client with the password gets through, so each refusal is its credentials', not a broker away: a
    wrong password or user fails SCRAM authentication, and a client without SASL gets its connection
    dropped (the broker wants the handshake first)."""
    s = running.settings
    assert (
        _librdkafka_errors(s, **SCRAM, **{"sasl.username": s.kafka.username, "sasl.password": s.kafka_password}) == []
    )
    errors = _librdkafka_errors(s, **credentials)
    assert errors, "the broker answered a client without the password"
    assert refusal in {e.name() for e in errors}, [str(e) for e in errors]


@pytest.mark.parametrize(
    "password, answer",
    [
        pytest.param(None, "failed TimeoutException", id="anonymous"),
        pytest.param("not-the-password", "failed SaslAuthenticationException", id="wrong-password"),
        pytest.param("the broker's", "cluster ", id="the-broker-s-password"),
    ],
)
def test_kafka_controller_listener_requires_credentials(
    running: RunningStack, password: str | None, answer: str
) -> None:
    """The KRaft controller listener takes SASL/PLAIN for the broker alone. Asked by the official
    Java admin client for the cluster (``bootstrap.controllers``, KIP-919: a controller answers
    DescribeCluster), it answers only with the broker's own password. (kafka-python cannot ask: it
    wants metadata first, which a controller never serves, so its refusal would prove nothing.)"""
    import shutil
    import subprocess

    from deploy.local.kafka import jars_dir

    s = running.settings
    credentials = (
        []
        if password is None
        else ["controller", s.kafka_controller_password if password == "the broker's" else password]
    )
    program = Path(__file__).parent / "java" / "DescribeQuorumCluster.java"
    java = shutil.which("java")
    assert java, "java is installed by deploy/local/install-system.sh"
    out = subprocess.run(
        [java, "-cp", f"{jars_dir(s)}/*", str(program), f"{s.kafka.host}:{s.kafka.controller_port}", *credentials],
        capture_output=True,
        text=True,
        timeout=180,
    )
    said = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-2000:]
    assert said.startswith(answer), said


def test_kafka_secrets_are_files_of_their_own_never_in_the_config_repository(running: RunningStack) -> None:
    s = running.settings
    for name in ("kafka_password", "kafka_controller_password"):
        path = s.secrets_dir / name
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    config = running.settings.run_dir / "kafka" / "server.properties"
    assert config.stat().st_mode & 0o077 == 0, "server.properties holds the JAAS passwords: owner only"
    assert "listener.security.protocol.map=CLIENT:SASL_PLAINTEXT" in config.read_text()


# ---- Redis ---------------------------------------------------------------------------------


def test_redis_requires_password(running: RunningStack) -> None:
    import redis

    r = running.settings.redis
    anonymous = redis.Redis(host=r.host, port=r.port, socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.set("k", "v")
    wrong = redis.Redis(host=r.host, port=r.port, password="not-the-password", socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()
    client = redis.Redis(host=r.host, port=r.port, password=running.settings.redis_password, socket_timeout=5)
    assert client.ping()
    client.set("itest:key", b"value", ex=60)
    assert client.get("itest:key") == b"value"
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-ttl"
    assert client.config_get("appendonly")["appendonly"] == "yes"  # service state survives a restart
    for c in (anonymous, wrong, client):
        c.close()


# ---- Triton --------------------------------------------------------------------------------

_ADD_ONE_CONFIG = """
name: "add_one"
backend: "python"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

_ADD_ONE_MODEL = """
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.threads = os.environ.get("OMP_NUM_THREADS", "")

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            y = pb_utils.Tensor("Y", (x + 1).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[y]))
        return responses
"""


@pytest.fixture
def add_one(running: RunningStack) -> str:
    """The ``add_one`` Python-backend model, written into the repository after the start and loaded
    through the repository API (explicit mode); whichever test needs it first loads it, so the
    tests pass in any order (and after ``test_down_stops_everything`` brought the stack up again)."""
    import tritonclient.grpc as grpcclient

    s = running.settings
    model_dir = s.model_repository / "add_one"
    if not (model_dir / "1" / "model.py").is_file():
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        (model_dir / "config.pbtxt").write_text(textwrap.dedent(_ADD_ONE_CONFIG))
        (model_dir / "1" / "model.py").write_text(textwrap.dedent(_ADD_ONE_MODEL))
    client = grpcclient.InferenceServerClient(url=s.triton.grpc_url)
    try:
        assert client.is_server_ready()
        if not client.is_model_ready("add_one"):
            client.load_model("add_one")
    finally:
        client.close()
    return "add_one"


def test_triton_loads_and_serves_python_model(running: RunningStack, add_one: str) -> None:
    """A model written after start is loaded through the repository API and answers."""
    import tritonclient.grpc as grpcclient

    s = running.settings
    client = grpcclient.InferenceServerClient(url=s.triton.grpc_url)
    try:
        assert client.is_model_ready(add_one)
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        inp = grpcclient.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("add_one", [inp], outputs=[grpcclient.InferRequestedOutput("Y")])
        np.testing.assert_array_equal(result.as_numpy("Y"), x + 1)
    finally:
        client.close()
    # the health check now covers the model too
    assert stack.status(s, ["triton"]).get("triton").healthy


# ---- Prometheus ----------------------------------------------------------------------------


def _query(settings: Settings, promql: str) -> list[dict]:
    p = settings.prometheus
    url = f"http://{p.host}:{p.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success"
    return body["data"]["result"]


def _wait_up(settings: Settings, promql: str, timeout_s: float = 45) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    result: list[dict] = []
    while time.monotonic() < deadline:
        result = _query(settings, promql)
        if result and all(r["value"][1] == "1" for r in result):
            return result
        time.sleep(0.5)
    raise AssertionError(f"{promql} not 1 within {timeout_s}s: {result}")


def test_prometheus_scrapes_triton(running: RunningStack) -> None:
    result = _wait_up(running.settings, 'up{job="triton"}')
    assert result[0]["metric"]["instance"] == f"127.0.0.1:{running.settings.triton.metrics_port}"


def test_prometheus_picks_up_registered_target(running: RunningStack) -> None:
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    s = running.settings
    registry = CollectorRegistry()
    Gauge("itest_value", "a test gauge", registry=registry).set(42)
    server, thread = start_http_server(running.spare_port, addr="127.0.0.1", registry=registry)
    path = FileScrapeTargets(s).register("itest_service", "itest-1", running.spare_port)
    try:
        assert json.loads(path.read_text())[0]["labels"] == {"service": "itest_service", "instance_id": "itest-1"}
        _wait_up(s, 'up{job="services", service="itest_service", instance_id="itest-1"}')
        value = _query(s, 'itest_value{service="itest_service"}')
        assert value and value[0]["value"][1] == "42"
    finally:
        FileScrapeTargets(s).unregister(path)
        server.shutdown()
        thread.join(5)
    assert not path.exists()


# ---- stack controller ----------------------------------------------------------------------


def test_second_up_is_a_noop(running: RunningStack) -> None:
    """A second ``up`` finds every process healthy and starts nothing (same pids)."""
    before = _pids(stack.status(running.settings))
    again = stack.up(running.settings)
    assert again.all_healthy
    assert _pids(again) == before


def test_port_taken_is_reported(running: RunningStack, tmp_path: Path) -> None:
    """A second stack on the first stack's Redis port fails clearly, naming the component."""
    s = running.settings
    other = load_settings(home=tmp_path, stack_name="other", redis={"port": s.redis.port})
    with pytest.raises(stack.PortInUseError, match=rf"redis: client port {s.redis.port}"):
        stack.up(other, components=["redis"], timeout_s=30)
    assert not (other.run_dir / "pids" / "redis.pid").exists()


def test_second_stack_runs_beside(running: RunningStack, tmp_path: Path) -> None:
    """Another stack (own name, home and ports) starts, serves and stops beside the first."""
    other = _settings(tmp_path, running.second_stack_ports, name="second")
    try:
        st = stack.up(other, timeout_s=300)
        assert st.all_healthy, st.table()
        assert not set(_pids(st).values()) & set(_pids(stack.status(running.settings)).values())
        import redis

        client = redis.Redis(host="127.0.0.1", port=other.redis.port, password=other.redis_password, socket_timeout=5)
        assert client.ping()
        client.close()
    finally:
        stack.down(other)
    assert stack.status(running.settings).all_healthy


def test_status_reports_health_and_memory(running: RunningStack, add_one: str) -> None:
    st = stack.status(running.settings)
    print("\n" + st.table())
    print(
        "[stack] RSS MB per component: "
        + ", ".join(f"{c.name}={c.rss_mb}" for c in st.components)
        + f", total={st.total_rss_mb}"
    )
    assert [c.name for c in st.components] == ["kafka", "redis", "triton", "prometheus"]
    assert st.all_healthy, st.table()
    for c in st.components:
        assert c.running and c.pid is not None
        assert c.rss_mb is not None and c.rss_mb > 1
        assert Path(c.log_path).exists()
    as_dict = json.loads(json.dumps(st.as_dict()))  # JSON-serialisable
    assert as_dict["all_healthy"] is True
    assert set(as_dict["components"]) == {"kafka", "redis", "triton", "prometheus"}
    assert st.get("triton").extra["models"] == [add_one]


def test_down_stops_everything(running: RunningStack, add_one: str) -> None:
    """Down stops every component, Triton's backend stubs (of the loaded model) included, and frees
    every port; the stack is then brought up again for whatever test runs next."""
    s = running.settings
    records = {c.name: PidRecord.read(s.run_dir / "pids" / f"{c.name}.pid") for c in stack.status(s).components}
    after = stack.down(s)
    assert not any(c.running for c in after.components)
    for name, record in records.items():
        assert record is not None
        assert not is_alive(record), f"{name} still running"
        assert group_members(record.pid) == [], f"{name}: processes of its group left (e.g. Triton's stubs)"
        assert not (s.run_dir / "pids" / f"{name}.pid").exists()
    for c in after.components:
        for port in c.ports.values():
            assert port_is_free("127.0.0.1", port), f"{c.name} port {port} still bound"
    assert stack.up(s, timeout_s=300).all_healthy  # the module's stack, for the tests after this one
