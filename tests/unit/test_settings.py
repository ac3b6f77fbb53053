from pathlib import Path

import pytest

from shared.settings import EMOTIONS, load_settings


def test_environment_overrides_nested_fields(monkeypatch, tmp_path):
    monkeypatch.setenv("EMOTION_HOME", str(tmp_path))
    monkeypatch.setenv("EMOTION_KAFKA__PORT", "29092")
    monkeypatch.setenv("EMOTION_TOPICS__EMOTIONS", "emotions.v2")
    monkeypatch.setenv("EMOTION_RUNTIME__MAX_BATCH", "8")
    s = load_settings()
    assert s.kafka.bootstrap == "127.0.0.1:29092"
    assert s.topics.emotions == "emotions.v2" and "emotions.v2" in s.topics.all()
    assert s.runtime.max_batch == 8
    assert s.home == tmp_path and s.models_dir == tmp_path / "models"
    assert s.model_repository == tmp_path / "triton" / "model_repository"


def test_second_stack_gets_its_own_run_dir(tmp_path):
    a, b = load_settings(home=tmp_path), load_settings(home=tmp_path, stack_name="second")
    assert a.run_dir != b.run_dir and a.models_dir == b.models_dir


def test_redis_password_comes_from_env_file_or_is_generated_once(monkeypatch, tmp_path):
    monkeypatch.delenv("EMOTION_REDIS__PASSWORD", raising=False)
    s = load_settings(home=tmp_path)
    generated = s.redis_password
    assert len(generated) >= 24
    assert (tmp_path / "secrets" / "redis_password").stat().st_mode & 0o077 == 0
    assert load_settings(home=tmp_path).redis_password == generated
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    monkeypatch.setenv("EMOTION_REDIS__PASSWORD_FILE", str(f))
    assert load_settings(home=tmp_path).redis_password == "from-file"
    monkeypatch.setenv("EMOTION_REDIS__PASSWORD", "from-env")
    assert load_settings(home=tmp_path).redis_password == "from-env"


def test_label_set_is_the_papers_seven_classes():
    assert EMOTIONS == ("anger", "sadness", "neutral", "happiness", "fear", "disgust", "surprise")
    assert isinstance(load_settings().home, Path)


def test_settings_env_rebuilds_the_same_settings_in_a_child(monkeypatch, tmp_path):
    from shared.settings import settings_env

    s = load_settings(home=tmp_path, stack_name="second")
    s.kafka.port, s.triton.grpc_port, s.runtime.max_batch = 29092, 29001, 4
    s.models.dir = tmp_path / "bundle"
    s.redis.password = "secret"
    env = settings_env(s)
    assert env["EMOTION_KAFKA__PORT"] == "29092" and env["EMOTION_STACK_NAME"] == "second"
    assert not any("PASSWORD" in k for k in env), "secrets must not travel in the environment dump"
    assert "EMOTION_PROMETHEUS__PORT" not in env  # defaults are not written
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    child = load_settings()
    assert child.kafka.port == 29092 and child.triton.grpc_port == 29001 and child.runtime.max_batch == 4
    assert child.run_dir == s.run_dir and child.models_dir == tmp_path / "bundle"


def test_kafka_password_from_env_or_file_or_generated_once_and_a_missing_file_is_an_error(monkeypatch, tmp_path):
    monkeypatch.delenv("EMOTION_KAFKA__PASSWORD", raising=False)
    generated = load_settings(home=tmp_path).kafka_password
    assert len(generated) >= 24 and load_settings(home=tmp_path).kafka_password == generated
    assert (tmp_path / "secrets" / "kafka_password").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("EMOTION_KAFKA__PASSWORD_FILE", str(tmp_path / "mounted" / "kafka"))
    with pytest.raises(FileNotFoundError, match="mounted/kafka"):
        load_settings(home=tmp_path).kafka_password
    (tmp_path / "mounted").mkdir()
    (tmp_path / "mounted" / "kafka").write_text("from-a-mounted-secret\n")
    assert load_settings(home=tmp_path).kafka_password == "from-a-mounted-secret"
    monkeypatch.setenv("EMOTION_KAFKA__PASSWORD", "from-env")
    assert load_settings(home=tmp_path).kafka_password == "from-env"


def test_every_kafka_client_authenticates_with_scram(tmp_path):
    from shared.kafka_io import client_options

    s = load_settings(home=tmp_path, kafka={"password": "pw"})
    options = client_options(s)
    assert options["security_protocol"] == "SASL_PLAINTEXT" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("emotion", "pw")
    plain = client_options(load_settings(home=tmp_path, kafka={"security_protocol": "PLAINTEXT"}))
    assert plain["security_protocol"] == "PLAINTEXT" and "sasl_plain_password" not in plain


def test_secrets_never_travel_in_the_child_environment(tmp_path):
    from shared.settings import settings_env

    env = settings_env(load_settings(home=tmp_path, kafka={"password": "kpw", "port": 1234}, redis={"password": "rpw"}))
    assert env["EMOTION_KAFKA__PORT"] == "1234"
    assert not any(v in ("kpw", "rpw") for v in env.values())


def test_the_local_brokers_own_settings_keep_their_environment_names(monkeypatch, tmp_path):
    """Jar versions and heap are the local stack's (deploy.local.kafka.BrokerSettings), still set
    with EMOTION_KAFKA__*; the shared settings load beside them and ignore them."""
    from deploy.local.kafka import BrokerSettings, Kafka, jars_dir

    monkeypatch.setenv("EMOTION_KAFKA__HEAP", "1g")
    monkeypatch.setenv("EMOTION_KAFKA__VERSION", "4.0.0")
    monkeypatch.setenv("EMOTION_KAFKA__LOG4J_VERSION", "2.24.3")
    monkeypatch.setenv("EMOTION_KAFKA__PORT", "29092")
    s = load_settings(home=tmp_path)
    assert s.kafka.port == 29092 and not hasattr(s.kafka, "heap")
    broker = BrokerSettings(_env_file=None)
    assert (broker.heap, broker.version, broker.log4j_version) == ("1g", "4.0.0", "2.24.3")
    assert jars_dir(s) == tmp_path / "kafka" / "jars-4.0.0"
    assert Kafka(s).broker == broker
