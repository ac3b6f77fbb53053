"""The deployment files agree with the Compose specification, the repository and the local stack.

What can be checked without a Docker engine or a cluster: ``docker-compose.yml`` (and its CPU
override) validates against the Compose Specification's JSON schema; every image it builds has its
Dockerfile and the files that Dockerfile copies; every bind mount exists; every volume, secret and
interpolated variable is declared; every ``EMOTION_*`` variable is a field of
:class:`shared.settings.Settings` and parses; ports agree with the settings; the containers run the
commands the local stack runs (the services' ``emotion serve NAME``, Triton's flags, the Kafka and
Redis configurations rendered from the local templates); the kustomize manifests parse, name only
files that exist, and agree with the compose file; KEDA scales each service on its own consumer
group and input topics, never past their partitions.  And the sizing guide states the benchmark
figures it is derived from.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from deploy.local.services import PIPELINE
from shared.settings import PROJECT_ROOT, Settings

ROOT = PROJECT_ROOT
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "deploy" / "docker" / "compose.cpu.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec.json"
K8S = ROOT / "deploy" / "k8s"
K8S_BASE = K8S / "base"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DOCS = ROOT / "docs" / "deployment.md"
BENCH_JSON = ROOT / "benchmarks" / "results" / "cpu-window10.json"

HOME_IN_CONTAINERS = Path("/var/lib/emotion")
READY_FILE = "/run/emotion/ready"
SECRETS_DIR = "/run/secrets"
COMPOSE_ONLY = {
    "prometheus": "a cluster has its own Prometheus: pods carry prometheus.io annotations, components/podmonitor",
    "grafana": "the cluster's Grafana imports deploy/grafana/emotion-dashboard.json",
    "publisher": "a client (profile), not part of the platform",
    "consumer": "a client (profile), not part of the platform",
}
"""Compose services without a Kubernetes workload of their own, and why."""
NOT_SETTINGS = {"EMOTION_PROMETHEUS_URL"}
"""EMOTION_* variables that are no settings: Grafana's datasource provisioning reads this one
(deploy/grafana/provisioning/datasources/emotion-prometheus.yaml)."""
K8S_ENV_DIFFERENCES = {"EMOTION_KAFKA__NUM_PARTITIONS"}
"""Settings the cluster sets otherwise than one host: more partitions, for more instances."""


# ---- loading ------------------------------------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it: the merge tags ``!reset`` and ``!override`` keep their value."""


for _tag in ("!reset", "!override"):
    ComposeLoader.add_constructor(
        _tag,
        lambda loader, node: (
            loader.construct_mapping(node, deep=True)
            if isinstance(node, yaml.MappingNode)
            else loader.construct_sequence(node, deep=True)
            if isinstance(node, yaml.SequenceNode)
            else loader.construct_scalar(node)
        ),
    )


def load_compose(path: Path = COMPOSE) -> dict:
    return yaml.load(path.read_text(), Loader=ComposeLoader)


def read_env_file(path: Path) -> dict[str, str]:
    """A ``.env`` file as Compose reads it (``KEY=value``, comments, inline `` # comments``)."""
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=value: {raw!r}"
        env[key.strip()] = re.split(r"\s+#", value, maxsplit=1)[0].strip()
    return env


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, env: dict[str, str], used: set[str] | None = None) -> str:
    """Compose's variable interpolation: ``$$``, ``${VAR}``, ``${VAR:-d}``, ``${VAR-d}``, ``${VAR:?e}``."""

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        if used is not None:
            used.add(name)
        op, arg = m.group(2), m.group(3)
        present = name in env
        if op in (":-", ":?") and not env.get(name):
            if op == ":?":
                raise AssertionError(f"${{{name}}} is required: {arg}")
            return arg
        if op in ("-", "?") and not present:
            if op == "?":
                raise AssertionError(f"${{{name}}} is required: {arg}")
            return arg
        assert present, f"${{{name}}} has no value and no default"
        return env[name]

    return _VARIABLE.sub(one, value)


def interpolated(doc, env: dict[str, str], used: set[str] | None = None):
    if isinstance(doc, dict):
        return {k: interpolated(v, env, used) for k, v in doc.items()}
    if isinstance(doc, list):
        return [interpolated(v, env, used) for v in doc]
    if isinstance(doc, str):
        return interpolate(doc, env, used)
    return doc


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(env_example) -> dict:
    """docker-compose.yml as Compose resolves it with ``.env`` copied from ``.env.example``."""
    return interpolated(load_compose(), env_example)


@pytest.fixture(autouse=True)
def no_emotion_environment(monkeypatch):
    """Settings built here see their defaults, not the caller's EMOTION_* variables."""
    for name in list(os.environ):
        if name.startswith("EMOTION_"):
            monkeypatch.delenv(name)


def defaults() -> Settings:
    return Settings(_env_file=None)


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def load_yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization(folder: Path) -> dict:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def k8s_objects(folder: Path = K8S_BASE) -> list[dict]:
    """The objects a kustomization's resources hold (a folder resource: its own kustomization's)."""
    objects = []
    for resource in kustomization(folder)["resources"]:
        path = (folder / resource).resolve()
        objects += k8s_objects(path) if path.is_dir() else load_yaml_docs(path)
    return objects


def k8s_object(kind: str, name: str, objects: list[dict] | None = None) -> dict:
    found = [o for o in (objects or k8s_objects()) if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def k8s_env_file(path: Path) -> dict[str, str]:
    return read_env_file(path)


def kustomize_image(image: str, folder: Path = K8S_BASE) -> str:
    """``image`` after the kustomization's ``images:`` transformer (newName / newTag)."""
    name, _, tag = image.partition(":")
    for rule in kustomization(folder).get("images", []):
        if rule["name"] == name:
            return f"{rule.get('newName', name)}:{rule.get('newTag', tag)}"
    return image


def k8s_local_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def flags(argv: list[str]) -> dict[str, str]:
    out = {}
    for arg in argv:
        assert arg.startswith("--"), arg
        key, _, value = arg[2:].partition("=")
        assert key not in out, f"--{key} given twice"
        out[key] = value
    return out


# ---- the Compose specification --------------------------------------------------------------------


def test_the_schema_fixture_is_the_compose_specification():
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["title"] == "Compose Specification"
    service = schema["definitions"]["service"]["properties"]
    assert {"gpus", "healthcheck", "deploy", "profiles", "secrets", "shm_size"} <= set(service)
    assert "compose-go" in (SCHEMA.parent / "compose-spec.SOURCE.md").read_text()


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_CPU], ids=lambda p: p.name)
def test_compose_files_validate_against_the_compose_specification(path, env_example):
    import jsonschema

    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    raw = load_compose(path)
    for doc in (raw, interpolated(raw, env_example)):
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_misspelt_key(compose):
    """The validation above can fail: a key the specification does not know is an error."""
    import jsonschema

    broken = copy.deepcopy(compose)
    broken["services"]["triton"]["shm-size"] = broken["services"]["triton"].pop("shm_size")
    errors = list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(broken))
    assert errors


# ---- .env.example -----------------------------------------------------------------------------------


def test_every_interpolated_variable_is_in_env_example_and_every_one_there_is_used(env_example):
    used: set[str] = set()
    for path in (COMPOSE, COMPOSE_CPU):
        interpolated(load_compose(path), env_example, used)
    assert used <= set(env_example), f"not in .env.example: {sorted(used - set(env_example))}"
    assert set(env_example) <= used, f"never used: {sorted(set(env_example) - used)}"


def test_env_example_holds_no_secret_and_no_setting(env_example):
    """Only versions, ports and secret *file paths*; never a password, never an EMOTION_* setting
    (Settings reads ``.env`` in a checkout too: the local stack must not pick up container hosts)."""
    assert not [k for k in env_example if k.startswith("EMOTION_")]
    secrets = {k: v for k, v in env_example.items() if "PASSWORD" in k or "SECRET" in k or "TOKEN" in k}
    assert secrets and all(k.endswith("_FILE") and v.startswith("./secrets/") for k, v in secrets.items()), secrets
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in gitignore and "secrets/" in gitignore
    assert Settings(_env_file=ENV_EXAMPLE).model_dump() == defaults().model_dump()


def test_env_example_versions_are_the_projects(env_example):
    from deploy.local.kafka import BrokerSettings, cluster_id

    s, broker = defaults(), BrokerSettings(_env_file=None)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert env_example["IMAGE_TAG"] == pyproject["project"]["version"]
    assert env_example["KAFKA_VERSION"] == broker.version
    assert env_example["KAFKA_CLUSTER_ID"] == cluster_id(s)
    assert env_example["KAFKA_HEAP"] == broker.heap
    assert int(env_example["KAFKA_PARTITIONS"]) == s.kafka.num_partitions
    assert env_example["REDIS_MAXMEMORY"] == s.redis.maxmemory
    assert env_example["PROMETHEUS_RETENTION"] == s.prometheus.retention
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert f'PY_VERSION="${{EMOTION_PYTHON:-{env_example["PYTHON_VERSION"]}}}"' in setup
    grafana = yaml.safe_load((ROOT / "deploy" / "grafana" / "docker-compose.yml").read_text())
    assert grafana["services"]["grafana"]["image"] == f"grafana/grafana:{env_example['GRAFANA_VERSION']}"
    # the Dockerfiles' own defaults are the same versions
    for dockerfile, arg, key in [
        ("emotion.Dockerfile", "PYTHON_VERSION", "PYTHON_VERSION"),
        ("triton.Dockerfile", "TRITON_VERSION", "TRITON_VERSION"),
        ("kafka.Dockerfile", "KAFKA_VERSION", "KAFKA_VERSION"),
        ("redis.Dockerfile", "REDIS_VERSION", "REDIS_VERSION"),
    ]:
        text = (ROOT / "deploy" / "docker" / dockerfile).read_text()
        assert f"ARG {arg}={env_example[key]}\n" in text, dockerfile


# ---- images -------------------------------------------------------------------------------------------


def _dockerfile_copies(text: str) -> list[str]:
    """Sources of the COPY/ADD instructions that read the build context."""
    sources = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        words = shlex.split(line.strip(), comments=True) if line.strip() and not line.lstrip().startswith("#") else []
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = words[1:]
        if any(a.startswith("--from") for a in args):
            continue
        paths = [a for a in args if not a.startswith("--")]
        sources += paths[:-1]
    return sources


def _dockerignore_includes(rules: list[str], path: str) -> bool:
    """Whether the build context keeps ``path`` under ``.dockerignore`` rules (last match wins)."""
    included = True
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule[1:] if negate else rule
        pattern = pattern.rstrip("/")
        candidates = [path] + [path.rsplit("/", n)[0] for n in range(1, path.count("/") + 1)]
        hit = any(
            fnmatch.fnmatch(c, pattern)
            or (
                pattern.startswith("**/")
                and any(fnmatch.fnmatch(c.split("/", k)[-1], pattern[3:]) for k in range(c.count("/") + 1))
            )
            for c in candidates
        )
        if hit:
            included = negate
    return included


def _builds(compose: dict) -> dict[str, dict]:
    return {name: svc["build"] for name, svc in compose["services"].items() if "build" in svc}


def test_every_build_has_its_dockerfile_and_the_files_it_copies(compose):
    builds = _builds(compose)
    assert {"kafka", "redis", "triton", "model-repository", *PIPELINE} <= set(builds)
    images: dict[str, str] = {}
    for name, build in builds.items():
        context = (ROOT / build["context"]).resolve()
        dockerfile = context / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        text = dockerfile.read_text()
        declared = set(re.findall(r"^ARG ([A-Z_]+)", text, re.M))
        assert set(build.get("args", {})) <= declared, (
            f"{name}: build args {set(build.get('args', {})) - declared} not ARGs"
        )
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
        rules = (
            [r.strip() for r in ignore.read_text().splitlines() if r.strip() and not r.startswith("#")]
            if ignore.exists()
            else []
        )
        assert rules, f"{name}: {ignore.name} missing: the build context would carry .venv and var/"
        for source in _dockerfile_copies(text):
            assert (context / source).exists(), f"{name}: COPY {source}: not in the build context"
            assert _dockerignore_includes(rules, source), f"{name}: {source} is excluded by {ignore.name}"
        for secret_like in ("var/secrets/kafka_password", ".venv/bin/python", "secrets/redis_password"):
            assert not _dockerignore_includes(rules, secret_like), f"{name}: {secret_like} would be sent to the builder"
        # one image name per Dockerfile, and one Dockerfile per image name
        image = compose["services"][name]["image"]
        assert images.setdefault(image, build["dockerfile"]) == build["dockerfile"], image
    assert "nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3" in (ROOT / "deploy/docker/triton.Dockerfile").read_text()


def test_the_images_install_what_pyproject_declares():
    import importlib.util

    spec = importlib.util.spec_from_file_location("image_requirements", ROOT / "deploy" / "docker" / "requirements.py")
    reqs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reqs)
    pyproject = ROOT / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    service_image = reqs.requirements(pyproject, ["bundle"], ["nvidia-pytriton"])
    assert service_image == [
        d
        for d in project["dependencies"] + project["optional-dependencies"]["bundle"]
        if not d.startswith("nvidia-pytriton")
    ]
    assert reqs.requirements(pyproject, only=["torch"]) == [
        d for d in project["dependencies"] if d.startswith("torch>")
    ]
    assert reqs.distribution("Torch_Geometric[full]>=2") == "torch-geometric"
    stages = _stages((ROOT / "deploy/docker/emotion.Dockerfile").read_text())
    triton = (ROOT / "deploy/docker/triton.Dockerfile").read_text()
    # the services read no model bundle; the tools image adds its weight packages
    assert "--exclude nvidia-pytriton" in stages["services"] and "--extra" not in stages["services"]
    assert "--extra bundle --exclude nvidia-pytriton" in stages["tools"]
    assert all("pip install --no-deps -e ." in stages[s] for s in ("services", "tools"))
    assert "--exclude nvidia-pytriton" in triton and "--extra bundle" not in triton and "PYTHONPATH" not in triton


def _stages(dockerfile: str) -> dict[str, str]:
    """A multi-stage Dockerfile's text by stage name (``FROM ... AS name``)."""
    parts = re.split(r"^FROM \S+ AS (\w+)\n", dockerfile, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_each_image_copies_its_own_layers_only():
    """The services image holds shared/, services/ and the command line; the tools image adds the
    training package and the model repository job; Triton holds no project code at all (each
    exported version folder carries its own: test_repository.py)."""
    stages = _stages((ROOT / "deploy/docker/emotion.Dockerfile").read_text())
    assert set(stages) == {"services", "tools"} and stages["tools"].startswith("USER root")
    assert _dockerfile_copies(stages["services"]) == [
        "pyproject.toml",
        "README.md",
        "deploy/docker/requirements.py",
        "shared",
        "services",
        "emotion",
    ]
    assert _dockerfile_copies(stages["tools"]) == ["training", "deploy/docker/model-repository.sh"]
    triton = (ROOT / "deploy/docker/triton.Dockerfile").read_text()
    assert _dockerfile_copies(triton) == ["pyproject.toml", "README.md", "deploy/docker/requirements.py"]


RUN_WITH_THE_SERVICE_LAYERS = """
import importlib, pkgutil, sys
sys.path[:0] = [sys.argv[1]]
sys.path.append(sys.argv[2])  # third-party packages; -S skipped the checkout's editable install
import services, shared
for package in (shared, services):  # every module of the two layers imports
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
print("modules ->", sorted(m for m in sys.modules if m.partition(".")[0] in ("services", "shared", "training")))
from emotion.cli import main
for command in sys.argv[3:]:
    try:
        main([*command.split(), "--help"])
    except SystemExit as done:
        print(command, "->", done.code)
"""


def test_the_services_image_layers_run_every_service_and_name_what_they_lack(tmp_path):
    """What the services stage copies is enough to run every service and the publisher of files,
    and a command of a package it leaves out says which package, instead of a traceback."""
    import shutil
    import sysconfig

    image = tmp_path / "opt-emotion"
    for source in ("shared", "services", "emotion"):
        shutil.copytree(ROOT / source, image / source, ignore=shutil.ignore_patterns("__pycache__"))
    run = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            RUN_WITH_THE_SERVICE_LAYERS,
            str(image),
            sysconfig.get_paths()["purelib"],
            "serve asr_alignment",
            "publish",
            "consume",
            "train",
            "bench",
        ],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "EMOTION_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    outcome = dict(line.split(" -> ") for line in run.stdout.splitlines() if " -> " in line)
    modules = outcome.pop("modules")
    assert "'services.asr_alignment'" in modules and "'services.moe_fusion'" in modules and "training" not in modules
    assert outcome == {
        "serve asr_alignment": "0",
        "publish": "0",
        "consume": "0",
        "train": "emotion train needs the project's `training` package, which this installation does not hold "
        "(the services image runs the streaming services only; the tools image, or a checkout, has everything)",
        "bench": "emotion bench needs the project's `benchmarks` package, which this installation does not hold "
        "(the services image runs the streaming services only; the tools image, or a checkout, has everything)",
    }, run.stdout + run.stderr[-2000:]


# ---- volumes, secrets, dependencies, health ---------------------------------------------------------


def test_bind_mounts_exist_and_named_volumes_and_secrets_are_declared(compose):
    declared_volumes, declared_secrets = set(compose["volumes"]), set(compose["secrets"])
    used_volumes, used_secrets = set(), set()
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert target.startswith("/"), f"{name}: {volume}"
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
                used_volumes.add(source)
        for secret in svc.get("secrets", []):
            assert secret in declared_secrets, f"{name}: secret {secret} is not declared"
            used_secrets.add(secret)
        for variable, value in environment(svc).items():
            if variable.endswith("PASSWORD_FILE"):  # a mounted compose secret, never a path of the host
                assert value.startswith(f"{SECRETS_DIR}/") and value.rsplit("/", 1)[1] in declared_secrets, (
                    name,
                    variable,
                )
            assert not variable.endswith("PASSWORD"), f"{name}: {variable}: a secret in the environment"
    assert used_volumes == declared_volumes and used_secrets == declared_secrets
    # what reads a secret has it mounted: the services use Kafka and Redis, the clients Kafka
    for name in PIPELINE:
        assert sorted(compose["services"][name]["secrets"]) == ["kafka_password", "redis_password"]
    for name in ("kafka-topics", "publisher", "consumer"):
        assert compose["services"][name]["secrets"] == ["kafka_password"]
    assert sorted(compose["services"]["kafka"]["secrets"]) == ["kafka_controller_password", "kafka_password"]
    assert compose["services"]["redis"]["secrets"] == ["redis_password"]
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/"), "secret files live in the gitignored ./secrets/"


def test_depends_on_waits_for_health_and_for_the_init_jobs(compose):
    services = compose["services"]
    one_shot = {n for n, s in services.items() if s.get("restart") == "no"}
    assert {"model-repository", "kafka-topics"} <= one_shot
    for name, svc in services.items():
        depends = svc.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for target, rule in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health, which has no check"
            else:
                assert rule["condition"] == "service_completed_successfully" and target in one_shot, (name, target)
        if name not in one_shot:
            assert "healthcheck" in svc, f"{name} has no health check"
    assert services["triton"]["depends_on"] == {"model-repository": {"condition": "service_completed_successfully"}}
    for name in PIPELINE:
        assert services[name]["depends_on"] == {
            "kafka-topics": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
            "triton": {"condition": "service_healthy"},
        }
        # ready once it consumes: the --ready-file, on a tmpfs a restart empties
        assert services[name]["healthcheck"]["test"] == ["CMD", "test", "-f", READY_FILE]
        assert services[name]["tmpfs"] == [str(Path(READY_FILE).parent)]
    assert services["kafka-topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert "--command-config /tmp/emotion-kafka/client.properties" in services["kafka"]["healthcheck"]["test"][1]
    assert "/v2/health/ready" in " ".join(services["triton"]["healthcheck"]["test"])
    assert "/-/ready" in " ".join(services["prometheus"]["healthcheck"]["test"])
    assert (
        "redis-cli" in services["redis"]["healthcheck"]["test"][1]
        and "ping" in services["redis"]["healthcheck"]["test"][1]
    )


def test_gpu_reservations_and_shared_memory(compose):
    services = compose["services"]
    reserving = {
        n
        for n, s in services.items()
        if s.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    }
    assert reserving == {"triton"}, "only Triton infers (the services call it)"
    (device,) = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["count"] == "1"
    size = re.fullmatch(r"(\d+)([kmg]?)b?", services["triton"]["shm_size"].lower())
    assert size and int(size.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[size.group(2)] >= 256 * 2**20
    cpu = interpolated(load_compose(COMPOSE_CPU), {})
    assert cpu["services"]["triton"]["deploy"] == {}, "the CPU override resets the GPU reservation"
    assert {n for n, s in services.items() if s.get("profiles")} == {"publisher", "consumer"}
    assert services["publisher"]["command"][:2] == ["emotion", "publish"]
    assert services["consumer"]["command"][:2] == ["emotion", "consume"]


# ---- settings ---------------------------------------------------------------------------------------------


def settings_field(variable: str):
    """The pydantic field an ``EMOTION_A__B`` variable sets; fails for one that sets nothing."""
    assert variable.startswith("EMOTION_"), variable
    model: type[BaseModel] = Settings
    parts = variable.removeprefix("EMOTION_").lower().split("__")
    for i, part in enumerate(parts):
        assert part in model.model_fields, f"{variable}: {model.__name__} has no field {part!r}"
        annotation = model.model_fields[part].annotation
        if i < len(parts) - 1:
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), (
                f"{variable}: {part} is not nested"
            )
            model = annotation
    return parts


def check_emotion_environment(env: dict[str, str], monkeypatch, where: str) -> Settings:
    """Every EMOTION_* variable of ``env`` is a settings field, and Settings built from them holds
    exactly those values (so a misspelt field or a value that does not parse fails here)."""
    emotion = {k: v for k, v in env.items() if k.startswith("EMOTION_") and k not in NOT_SETTINGS}
    assert emotion, where
    with monkeypatch.context() as m:
        for k, v in emotion.items():
            m.setenv(k, v)
        settings = Settings(_env_file=None)
    for variable, value in emotion.items():
        node = settings
        for part in settings_field(variable):
            node = getattr(node, part)
        shown = str(node).lower() if isinstance(node, bool) else str(node)
        assert shown == value, f"{where}: {variable}={value!r} gives {node!r}"
    return settings


def test_every_emotion_variable_is_a_settings_field_and_parses(compose, monkeypatch, env_example):
    for name, svc in compose["services"].items():
        if any(k.startswith("EMOTION_") and k not in NOT_SETTINGS for k in environment(svc)):
            check_emotion_environment(environment(svc), monkeypatch, f"docker-compose.yml {name}")
    assert environment(compose["services"]["grafana"]).keys() & NOT_SETTINGS == NOT_SETTINGS
    cpu = interpolated(load_compose(COMPOSE_CPU), env_example)
    for name, svc in cpu["services"].items():
        check_emotion_environment(
            {**environment(compose["services"][name]), **environment(svc)}, monkeypatch, f"compose.cpu.yaml {name}"
        )
    s = check_emotion_environment(k8s_env_file(K8S_BASE / "emotion.env"), monkeypatch, "deploy/k8s/base/emotion.env")
    assert s.home == HOME_IN_CONTAINERS
    for patch in _cpu_overlay_patches():
        value = patch.get("value")
        for entry in value if isinstance(value, list) else [value]:
            if isinstance(entry, dict) and str(entry.get("name", "")).startswith("EMOTION_"):
                check_emotion_environment({entry["name"]: entry["value"]}, monkeypatch, "overlays/cpu")
    with pytest.raises(AssertionError):
        settings_field("EMOTION_KAFKA__HOSTNAME")  # the check itself can fail


def test_the_containers_configuration_is_the_services_view_of_the_stack(compose, monkeypatch):
    env = environment(compose["services"]["asr_alignment"])
    s = check_emotion_environment(env, monkeypatch, "services")
    d = defaults()
    assert (s.kafka.host, s.redis.host, s.triton.host) == ("kafka", "redis", "triton")
    assert s.kafka.port == d.kafka.port and s.redis.port == d.redis.port
    assert (s.triton.http_port, s.triton.grpc_port) == (d.triton.http_port, d.triton.grpc_port)
    assert s.kafka.password_file == Path(SECRETS_DIR, "kafka_password")
    assert s.redis.password_file == Path(SECRETS_DIR, "redis_password")
    assert (s.runtime.metrics_host, s.runtime.register_scrape_target) == ("0.0.0.0", False)
    assert s.runtime.metrics_port != 0, "a fixed port: Prometheus scrapes it through DNS"
    assert s.home == HOME_IN_CONTAINERS


def test_ports_agree_with_the_settings(compose):
    d = defaults()
    services = compose["services"]
    assert environment(services["kafka"])["KAFKA_PORT"] == str(d.kafka.port)
    assert environment(services["kafka"])["KAFKA_MAX_MESSAGE_BYTES"] == str(d.kafka.max_message_bytes)
    assert environment(services["kafka"])["KAFKA_USERNAME"] == d.kafka.username
    assert environment(services["kafka"])["KAFKA_SASL_MECHANISM"] == d.kafka.sasl_mechanism
    assert f"localhost:{d.kafka.port}" in services["kafka"]["healthcheck"]["test"][1]
    assert environment(services["redis"])["REDIS_PORT"] == str(d.redis.port)
    assert f"-p {d.redis.port}" in services["redis"]["healthcheck"]["test"][1]
    triton = flags(services["triton"]["command"][1:])
    assert (triton["http-port"], triton["grpc-port"], triton["metrics-port"]) == tuple(
        str(p) for p in (d.triton.http_port, d.triton.grpc_port, d.triton.metrics_port)
    )
    assert f"localhost:{d.triton.http_port}/" in " ".join(services["triton"]["healthcheck"]["test"])
    prometheus = flags(services["prometheus"]["command"])
    assert prometheus["web.listen-address"] == f"0.0.0.0:{d.prometheus.port}"
    assert prometheus["storage.tsdb.retention.time"] == d.prometheus.retention
    assert services["prometheus"]["ports"] == [f"127.0.0.1:{d.prometheus.port}:{d.prometheus.port}"]
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", [])), (
        "nothing on public interfaces"
    )


# ---- the commands are the local stack's ------------------------------------------------------------


def local_service_command(name: str, tmp_path: Path, monkeypatch) -> list[str]:
    """The exact argv deploy.local.services starts for ``name`` (Popen intercepted)."""
    import deploy.local.services as local

    calls = []

    class FakePopen:
        pid = 1

        def __init__(self, cmd, **kwargs):
            calls.append(cmd)

    monkeypatch.setattr(local.subprocess, "Popen", FakePopen)
    process = local.ServiceProcesses(Settings(home=tmp_path, _env_file=None), names=(name,))._spawn(name, 0)
    (cmd,) = calls
    return [str(READY_FILE) if a == str(process.ready_file) else a for a in cmd]


def test_the_services_run_the_local_stacks_command(compose, tmp_path, monkeypatch):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["emotion"] == "emotion.cli:main"  # `emotion` is `python -m emotion.cli`
    pipeline_in_compose = [n for n in compose["services"] if n in PIPELINE]
    assert pipeline_in_compose == list(PIPELINE)
    for name in PIPELINE:
        local = local_service_command(name, tmp_path, monkeypatch)
        assert local[:3] == [sys.executable, "-m", "emotion.cli"]
        assert compose["services"][name]["command"] == ["emotion", *local[3:]], name
        assert compose["services"][name]["image"] == compose["services"]["consumer"]["image"]
        assert compose["services"][name]["build"]["target"] == "services"
    for tool in ("model-repository", "publisher"):  # they need the training package
        assert compose["services"][tool]["build"]["target"] == "tools", tool


def local_triton_command(**triton: object) -> list[str]:
    from deploy.local.triton import Triton

    return Triton(Settings(home=HOME_IN_CONTAINERS, triton=triton, _env_file=None)).command()


def expected_container_triton_flags(local: list[str]) -> dict[str, str]:
    """The local flags as a container needs them: every interface, the image's own backends."""
    expected = flags(local[1:])
    del expected["backend-directory"]
    for key in ("http-address", "grpc-address", "metrics-address"):
        expected[key] = "0.0.0.0"
    return expected


def test_triton_runs_with_the_local_stacks_flags(compose, env_example):
    gpu = compose["services"]["triton"]["command"]
    assert gpu[0] == "tritonserver"
    assert flags(gpu[1:]) == expected_container_triton_flags(local_triton_command(instance_kind="gpu"))
    cpu = interpolated(load_compose(COMPOSE_CPU), env_example)["services"]["triton"]["command"]
    assert cpu[0] == "tritonserver"
    assert flags(cpu[1:]) == expected_container_triton_flags(local_triton_command(instance_kind="cpu"))
    assert flags(gpu[1:])["model-repository"] == str(Settings(home=HOME_IN_CONTAINERS, _env_file=None).model_repository)


def test_triton_gets_the_local_stacks_environment_and_the_exported_repository(compose):
    from deploy.local.triton import Triton

    services = compose["services"]
    env = environment(services["triton"])
    local = Triton(Settings(home=HOME_IN_CONTAINERS, _env_file=None)).env()
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "EMOTION_HOME", "EMOTION_STACK_NAME"):
        assert env[key] == local[key], key
    # no project code on Triton's path, here or locally: the version folders carry their own
    assert "PYTHONPATH" not in env and "PYTHONPATH" not in {k for k in local if local[k] != os.environ.get(k)}
    # the init job writes the repository (and the bundle it names) where Triton reads it
    writer = services["model-repository"]
    assert writer["command"] == ["/opt/emotion/deploy/docker/model-repository.sh"]
    assert (ROOT / "deploy/docker/model-repository.sh").stat().st_mode & 0o111
    home = str(HOME_IN_CONTAINERS)
    assert f"emotion-home:{home}" in writer["volumes"] and f"emotion-home:{home}:ro" in services["triton"]["volumes"]
    assert environment(writer)["EMOTION_HOME"] == env["EMOTION_HOME"] == home
    script = (ROOT / "deploy/docker/model-repository.sh").read_text()
    assert (
        "emotion models fetch" in script and "ensure_default_model" in script and "emotion export --no-load" in script
    )


def test_the_topics_job_creates_the_topics_as_the_local_stack_does(compose, monkeypatch, tmp_path):
    """Both call shared.kafka_io.ensure_topics with the settings: the local stack once Kafka is up,
    the job with the containers' environment."""
    import deploy.local.kafka as local_kafka
    import shared.kafka_io

    calls = []
    monkeypatch.setattr(local_kafka, "ensure_topics", lambda settings: calls.append(("local", settings)) or [])
    monkeypatch.setattr(shared.kafka_io, "ensure_topics", lambda settings: calls.append(("job", settings)) or [])
    local_kafka.Kafka(Settings(home=tmp_path, _env_file=None)).after_ready()
    command = compose["services"]["kafka-topics"]["command"]
    assert command[:2] == ["python", "-c"]
    for k, v in environment(compose["services"]["kafka-topics"]).items():
        monkeypatch.setenv(k, v)
    exec(compile(command[2], "kafka-topics", "exec"), {})
    assert [who for who, _ in calls] == ["local", "job"]
    job = calls[1][1]
    assert job.kafka.host == "kafka" and job.topics.all() == defaults().topics.all()
    assert job.kafka.num_partitions == int(environment(compose["services"]["kafka"])["KAFKA_NUM_PARTITIONS"])
    k8s_job = _workloads()["kafka-topics"][2]
    assert k8s_job["command"] == command


def _secret_files(tmp_path: Path, **values: str) -> dict[str, str]:
    paths = {}
    for name, value in values.items():
        path = tmp_path / "run-secrets" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(value + "\n")
        paths[name] = str(path)
    return paths


def _run_entrypoint(script: str, env: dict[str, str]) -> None:
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "docker" / script), "--render"],
        env={"PATH": os.environ["PATH"], **env},
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )


TRICKY_PASSWORD = 'pa"ss\\w&rd ${host} $x'
"""Quotes, a backslash, an ampersand and template syntax: quoting and substitution must match Python's."""


def test_kafka_runs_the_local_stacks_broker_configuration(compose, tmp_path, monkeypatch):
    import deploy.local.kafka as local_kafka

    controller_password = "ctrl\\'\"pw"
    home = tmp_path / "home"
    (home / "secrets").mkdir(parents=True)
    (home / "secrets" / "kafka_controller_password").write_text(controller_password + "\n")
    settings = Settings(home=home, kafka={"password": TRICKY_PASSWORD}, _env_file=None)
    monkeypatch.setattr(local_kafka.Kafka, "_java", lambda self, *a, **k: ["java", *a])
    monkeypatch.setattr(local_kafka.process, "run_checked", lambda *a, **k: None)
    kafka = local_kafka.Kafka(settings)
    kafka.prepare()
    local = kafka.config_file.read_text().splitlines()

    files = _secret_files(tmp_path, kafka_password=TRICKY_PASSWORD, kafka_controller_password=controller_password)
    env = environment(compose["services"]["kafka"])
    conf = tmp_path / "conf"
    _run_entrypoint(
        "kafka-entrypoint.sh",
        {
            **env,
            "KAFKA_PASSWORD_FILE": files["kafka_password"],
            "KAFKA_CONTROLLER_PASSWORD_FILE": files["kafka_controller_password"],
            "KAFKA_CONF_DIR": str(conf),
            "KAFKA_TEMPLATE": str(ROOT / "deploy/local/templates/kafka-server.properties.tmpl"),
        },
    )
    container = (conf / "server.properties").read_text().splitlines()

    differ = {"listeners", "advertised.listeners", "log.dirs"}
    key = lambda line: line.split("=", 1)[0]  # noqa: E731
    assert [line for line in container if key(line) not in differ] == [
        line for line in local if key(line) not in differ
    ]
    values = dict(line.split("=", 1) for line in container if "=" in line and not line.startswith("#"))
    assert (
        values["listeners"]
        == f"CLIENT://0.0.0.0:{settings.kafka.port},CONTROLLER://127.0.0.1:{settings.kafka.controller_port}"
    )
    assert (
        values["advertised.listeners"]
        == f"CLIENT://kafka:{settings.kafka.port},CONTROLLER://127.0.0.1:{settings.kafka.controller_port}"
    )
    assert values["log.dirs"] == "/var/lib/kafka/data"
    assert values["num.partitions"] == str(settings.kafka.num_partitions)
    assert values["message.max.bytes"] == str(settings.kafka.max_message_bytes)
    assert (conf / "credentials.sha256").read_text().strip() == kafka.listeners().fingerprint()
    client = (conf / "client.properties").read_text()
    assert "security.protocol=SASL_PLAINTEXT" in client and f"sasl.mechanism={settings.kafka.sasl_mechanism}" in client
    assert local_kafka._jaas(TRICKY_PASSWORD) in client


def test_redis_runs_the_local_stacks_configuration(compose, tmp_path):
    from deploy.local.redis import Redis

    settings = Settings(home=tmp_path / "home", redis={"password": TRICKY_PASSWORD}, _env_file=None)
    redis = Redis(settings)
    redis.prepare()
    local = redis.config_file.read_text().splitlines()

    files = _secret_files(tmp_path, redis_password=TRICKY_PASSWORD)
    conf = tmp_path / "conf"
    _run_entrypoint(
        "redis-entrypoint.sh",
        {
            **environment(compose["services"]["redis"]),
            "REDIS_PASSWORD_FILE": files["redis_password"],
            "REDIS_CONF_DIR": str(conf),
            "REDIS_TEMPLATE": str(ROOT / "deploy/local/templates/redis.conf.tmpl"),
        },
    )
    container = (conf / "redis.conf").read_text().splitlines()
    differ = {"bind", "logfile", "dir"}
    key = lambda line: line.split(" ", 1)[0]  # noqa: E731
    assert [line for line in container if key(line) not in differ] == [
        line for line in local if key(line) not in differ
    ]
    assert "bind 0.0.0.0" in container and 'logfile ""' in container and 'dir "/data"' in container
    assert "appendonly yes" in container and "maxmemory-policy volatile-ttl" in container
    assert f"maxmemory {settings.redis.maxmemory}" in container


def test_the_entrypoints_refuse_a_template_value_they_do_not_have(tmp_path):
    template = tmp_path / "t.tmpl"
    template.write_text("a=${known}\nb=${unknown}\n")
    script = f"source {ROOT / 'deploy/docker/render-template.sh'}; render_template {template} known=1"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10)
    assert result.returncode != 0 and "${unknown}" in result.stderr


# ---- Prometheus and Grafana -------------------------------------------------------------------------------


def test_prometheus_scrapes_every_service_and_triton_like_the_local_stack(compose):
    d = defaults()
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    interval = f"{d.prometheus.scrape_interval_s:g}s"
    assert config["global"]["scrape_interval"] == interval
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    (dns,) = jobs["services"]["dns_sd_configs"]
    assert dns["names"] == list(PIPELINE) and dns["type"] == "A"
    metrics_port = int(environment(compose["services"]["asr_alignment"])["EMOTION_RUNTIME__METRICS_PORT"])
    assert dns["port"] == metrics_port
    assert {"source_labels": ["__meta_dns_name"], "target_label": "service"} in jobs["services"]["relabel_configs"]
    (triton,) = jobs["triton"]["static_configs"]
    assert triton["targets"] == [f"triton:{d.triton.metrics_port}"] and triton["labels"] == {"service": "triton"}
    local = (ROOT / "deploy/local/templates/prometheus.yml.tmpl").read_text()
    assert "job_name: triton" in local and "service: triton" in local  # the same job and label locally
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert flags(compose["services"]["prometheus"]["command"])["config.file"] == "/etc/prometheus/prometheus.yml"


def test_grafana_gets_the_provisioned_dashboard_and_this_prometheus(compose):
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/emotion.yaml").read_text())
    (dashboards,) = provider["providers"]
    folder = dashboards["options"]["path"]
    assert mounts[f"{folder}/emotion-dashboard.json"] == "./deploy/grafana/emotion-dashboard.json"
    assert environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == f"{folder}/emotion-dashboard.json"
    assert mounts["/etc/grafana/provisioning/datasources"] == "./deploy/grafana/provisioning/datasources"
    (source,) = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/emotion-prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["url"] == "${EMOTION_PROMETHEUS_URL}"
    assert environment(grafana)["EMOTION_PROMETHEUS_URL"] == f"http://prometheus:{defaults().prometheus.port}"
    assert source["jsonData"]["timeInterval"] == yaml.safe_load(PROMETHEUS_YML.read_text())["global"]["scrape_interval"]


# ---- Kubernetes -----------------------------------------------------------------------------------------------


def _kustomizations() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def _cpu_overlay_patches() -> list[dict]:
    (patch,) = kustomization(K8S / "overlays" / "cpu")["patches"]
    return yaml.safe_load(patch["patch"])


def test_every_kustomization_names_files_that_exist_and_they_parse():
    folders = _kustomizations()
    assert {K8S_BASE, K8S / "overlays" / "cpu", K8S / "components" / "podmonitor"} <= set(folders)
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    for folder in folders:
        k = kustomization(folder)
        for resource in k.get("resources", []) + k.get("components", []):
            path = (folder / resource).resolve()
            assert path.exists(), f"{folder.relative_to(ROOT)}: {resource} missing"
            if path.is_file():
                for doc in load_yaml_docs(path):
                    assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path}: {doc}"
            else:
                assert (path / "kustomization.yaml").is_file()
        for generator in k.get("configMapGenerator", []):
            for env_file in generator.get("envs", []):
                assert (folder / env_file).is_file()
        for generator in k.get("secretGenerator", []):
            for entry in generator.get("files", []):
                source = entry.split("=", 1)[-1]
                # never committed: created by the operator (docs/deployment.md) in a gitignored folder
                assert source.startswith("secrets/") and "secrets/" in gitignore, source
        for patch in k.get("patches", []):
            target = patch["target"]
            assert k8s_object(target["kind"], target["name"], k8s_objects(folder))


def test_the_k8s_configuration_is_the_compose_configuration(compose):
    compose_env = {
        k: v for k, v in environment(compose["services"]["asr_alignment"]).items() if k.startswith("EMOTION_")
    }
    k8s_env = k8s_env_file(K8S_BASE / "emotion.env")
    assert set(compose_env) == set(k8s_env)
    assert {k for k in k8s_env if k8s_env[k] != compose_env[k]} == K8S_ENV_DIFFERENCES
    generators = {g["name"]: g for g in kustomization(K8S_BASE)["configMapGenerator"]}
    assert generators["emotion-config"]["envs"] == ["emotion.env"]


def _workloads() -> dict[str, tuple[str, str, dict]]:
    """Compose service -> (kind, name, container) of its Kubernetes counterpart."""
    objects = k8s_objects()
    triton = k8s_object("Deployment", "triton", objects)["spec"]["template"]["spec"]
    out = {
        "kafka": (
            "StatefulSet",
            "kafka",
            k8s_object("StatefulSet", "kafka", objects)["spec"]["template"]["spec"]["containers"][0],
        ),
        "redis": (
            "StatefulSet",
            "redis",
            k8s_object("StatefulSet", "redis", objects)["spec"]["template"]["spec"]["containers"][0],
        ),
        "triton": ("Deployment", "triton", triton["containers"][0]),
        "model-repository": ("Deployment", "triton (init container)", triton["initContainers"][0]),
        "kafka-topics": (
            "Job",
            "kafka-topics",
            k8s_object("Job", "kafka-topics", objects)["spec"]["template"]["spec"]["containers"][0],
        ),
    }
    for name in PIPELINE:
        spec = k8s_object("Deployment", name.replace("_", "-"), objects)["spec"]["template"]["spec"]
        out[name] = ("Deployment", name.replace("_", "-"), spec["containers"][0])
    return out


def test_every_compose_service_has_a_k8s_workload_with_the_same_image_and_command(compose):
    workloads = _workloads()
    assert set(compose["services"]) == set(workloads) | set(COMPOSE_ONLY)
    k8s_env = k8s_env_file(K8S_BASE / "emotion.env")
    for name, (kind, k8s_name, container) in workloads.items():
        svc = compose["services"][name]
        assert kustomize_image(container["image"]) == svc["image"], f"{name}: {container['image']} vs {svc['image']}"
        assert container.get("command") == svc.get("command"), f"{name}: command differs from compose"
        env = environment(svc)
        if any(k.startswith("EMOTION_") for k in env):
            assert container.get("envFrom") == [{"configMapRef": {"name": "emotion-config"}}], name
            extra = {k: v for k, v in env.items() if not k.startswith("EMOTION_")}
            assert {k: v for k, v in k8s_local_env(container).items() if k in extra} == extra, name
        else:  # Kafka, Redis: their own variables, the same but for what a cluster sizes otherwise
            local = k8s_local_env(container)
            assert set(local) - {"POD_NAME"} == set(env), name
            differs = {k for k in env if local[k] != env[k]}
            assert differs <= {"KAFKA_ADVERTISED_HOST", "KAFKA_NUM_PARTITIONS", "KAFKA_HEAP", "REDIS_MAXMEMORY"}, (
                name,
                differs,
            )
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        if svc.get("secrets"):
            spec = _pod_spec(kind, k8s_name)
            (volume,) = [v for v in spec["volumes"] if v["name"] == mounts[SECRETS_DIR]]
            assert volume["secret"]["secretName"] == "emotion-secrets"
            assert sorted(i["path"] for i in volume["secret"]["items"]) == sorted(svc["secrets"]), name
    kafka = k8s_local_env(workloads["kafka"][2])
    assert kafka["KAFKA_NUM_PARTITIONS"] == k8s_env["EMOTION_KAFKA__NUM_PARTITIONS"]
    assert kafka["KAFKA_ADVERTISED_HOST"] == "$(POD_NAME).kafka-headless"
    assert k8s_object("Service", "kafka-headless")["spec"]["publishNotReadyAddresses"] is True
    for name in PIPELINE:  # the same readiness as compose's health check
        assert (
            workloads[name][2]["readinessProbe"]["exec"]["command"]
            == compose["services"][name]["healthcheck"]["test"][1:]
        )


def _pod_spec(kind: str, name: str) -> dict:
    return k8s_object(kind, name.split(" ")[0])["spec"]["template"]["spec"]


def test_triton_on_k8s_asks_for_a_gpu_and_shared_memory(compose):
    spec = _pod_spec("Deployment", "triton")
    (triton,) = spec["containers"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    (shm,) = [v for v in spec["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"mountPath": "/dev/shm", "name": "dshm"} in triton["volumeMounts"]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    d = defaults()
    assert ports == {"http": d.triton.http_port, "grpc": d.triton.grpc_port, "metrics": d.triton.metrics_port}
    home = [m for m in triton["volumeMounts"] if m["name"] == "emotion-home"]
    init_home = [m for m in spec["initContainers"][0]["volumeMounts"] if m["name"] == "emotion-home"]
    assert home[0]["mountPath"] == init_home[0]["mountPath"] == str(HOME_IN_CONTAINERS)
    # one owner for the volume: the init container's user, and Triton's (a rollout exports there)
    assert (
        triton["securityContext"]["runAsUser"]
        == spec["initContainers"][0]["securityContext"]["runAsUser"]
        == spec["securityContext"]["fsGroup"]
    )
    service = k8s_object("Service", "triton")
    assert {p["port"] for p in service["spec"]["ports"]} == set(ports.values())


def _apply_json_patch(doc: dict, operations: list[dict]) -> dict:
    """RFC 6902 add/remove/replace, as kustomize applies the overlay's patch."""
    doc = copy.deepcopy(doc)
    for op in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if op["op"] == "remove":
            assert (last in node) if isinstance(node, dict) else int(last) < len(node), op["path"]
            del node[int(last) if isinstance(node, list) else last]
        elif op["op"] in ("add", "replace"):
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else int(last), op["value"])
            else:
                assert op["op"] == "add" or last in node, op["path"]
                node[last] = op["value"]
        else:
            raise AssertionError(f"unsupported op {op['op']}")
    return doc


def test_the_cpu_overlay_is_the_compose_cpu_override(env_example):
    triton = _apply_json_patch(k8s_object("Deployment", "triton"), _cpu_overlay_patches())
    spec = triton["spec"]["template"]["spec"]
    cpu = interpolated(load_compose(COMPOSE_CPU), env_example)["services"]
    assert spec["containers"][0]["command"] == cpu["triton"]["command"]
    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"]["limits"] and "tolerations" not in spec
    init_env = {e["name"]: e["value"] for e in spec["initContainers"][0]["env"]}
    assert init_env == environment(cpu["model-repository"])
    triton_env = k8s_local_env(spec["containers"][0])
    assert {k: triton_env[k] for k in environment(cpu["triton"])} == environment(cpu["triton"])


def test_keda_scales_each_service_on_its_group_and_input_topics():
    from services.registry import SERVICES

    objects = k8s_objects()
    partitions = int(k8s_env_file(K8S_BASE / "emotion.env")["EMOTION_KAFKA__NUM_PARTITIONS"])
    scaled = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ScaledObject"}
    assert set(scaled) == {n.replace("_", "-") for n in PIPELINE}
    auths = {o["metadata"]["name"]: o for o in objects if o["kind"] == "TriggerAuthentication"}
    settings = defaults()
    for name in PIPELINE:
        service = SERVICES[name](settings)
        so = scaled[name.replace("_", "-")]["spec"]
        assert so["scaleTargetRef"]["name"] == name.replace("_", "-")
        k8s_object("Deployment", so["scaleTargetRef"]["name"], objects)
        assert 1 <= so["minReplicaCount"] <= so["maxReplicaCount"] <= partitions, (
            f"{name}: more replicas than partitions"
        )
        triggers = so["triggers"]
        assert all(t["type"] == "kafka" for t in triggers)
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {
            f"emotion-{name}"
        }  # shared.runtime's default group
        topics = [t["metadata"]["topic"] for t in triggers]
        assert sorted(topics) == sorted(service.inputs()), f"{name}: {topics} vs {list(service.inputs())}"
        for t in triggers:
            assert t["metadata"]["bootstrapServers"] == f"kafka:{settings.kafka.port}"
            assert t["metadata"]["allowIdleConsumers"] == "false" and int(t["metadata"]["lagThreshold"]) > 0
            assert t["authenticationRef"]["name"] in auths
    (auth,) = auths.values()
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"sasl", "username", "password", "tls"}
    secrets = {g["name"]: g for g in kustomization(K8S_BASE)["secretGenerator"]}
    literals = dict(item.split("=", 1) for item in secrets["emotion-kafka-keda"]["literals"])
    for parameter, (secret, key) in refs.items():
        keys = (
            set(literals) if secret == "emotion-kafka-keda" else {f.split("=", 1)[0] for f in secrets[secret]["files"]}
        )
        assert key in keys, (parameter, secret, key)
        assert secrets[secret].get("options", {}).get("disableNameSuffixHash") is True, "KEDA refers to it by name"
    assert literals["username"] == settings.kafka.username
    assert literals["sasl"] == settings.kafka.sasl_mechanism.lower().replace("-", "_").replace(
        "scram_sha_", "scram_sha"
    )
    assert literals["tls"] == "disable" and settings.kafka.security_protocol == "SASL_PLAINTEXT"


def test_pods_are_scraped_on_their_metrics_ports(compose):
    metrics_port = environment(compose["services"]["asr_alignment"])["EMOTION_RUNTIME__METRICS_PORT"]
    for name in PIPELINE:
        deployment = k8s_object("Deployment", name.replace("_", "-"))
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == metrics_port
        (port,) = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        assert port == {"name": "metrics", "containerPort": int(metrics_port)}
        assert (
            deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "streaming-service"
        )
    triton = k8s_object("Deployment", "triton")["spec"]["template"]["metadata"]["annotations"]
    assert triton["prometheus.io/port"] == str(defaults().triton.metrics_port)
    monitors = load_yaml_docs(K8S / "components" / "podmonitor" / "podmonitor.yaml")
    selectors = [m["spec"]["selector"]["matchLabels"] for m in monitors]
    assert {"app.kubernetes.io/component": "streaming-service"} in selectors and {
        "app.kubernetes.io/name": "triton"
    } in selectors
    assert all(e["port"] == "metrics" for m in monitors for e in m["spec"]["podMetricsEndpoints"])


# ---- the sizing guide ---------------------------------------------------------------------------------------------


def sizing_figures() -> dict[str, str]:
    """The figures docs/deployment.md's sizing guide derives from the benchmark it names (BENCH_JSON)."""
    bench = json.loads(BENCH_JSON.read_text())
    cores = bench["machine"]["cores"]
    fast16 = next(e for e in bench["e2e"] if e["pace"] == "fast" and e["calls"] == 16)
    best_asr = max(bench["ceilings"]["asr"], key=lambda c: c["throughput_x"])
    processes = {k: v["cpu_s"] for k, v in fast16["processes"].items() if k not in ("total", "bench")}
    platform_cpu = sum(processes.values())
    whisper_cpu = sum(v for k, v in processes.items() if k.startswith("triton:asr"))
    model_cpu = sum(v for k, v in processes.items() if k.startswith("triton:"))
    audio = fast16["audio_s"]
    per_core = fast16["throughput_x"] / cores
    return {
        "cores": f"{cores}",
        "throughput": f"{fast16['throughput_x']:.2f}",
        "audio_hours_per_core_hour": f"{per_core:.2f}",
        "asr_ceiling": f"{best_asr['throughput_x']:.2f}",
        "asr_ceiling_per_core": f"{best_asr['throughput_x'] / cores:.2f}",
        "platform_cpu_s": f"{platform_cpu:.2f}",
        "audio_s": f"{audio:.2f}",
        "cpu_s_per_audio_s": f"{platform_cpu / audio:.3f}",
        "whisper_share": f"{100 * whisper_cpu / platform_cpu:.0f} %",
        "without_whisper_per_core_hour": f"{audio / (platform_cpu - whisper_cpu):.1f}",
        "without_models_per_core_hour": f"{audio / (platform_cpu - model_cpu):.1f}",
        "calls_for_300": f"{math.ceil(300 / per_core)}",
    }


def test_the_sizing_guide_states_the_figures_it_is_derived_from():
    text = DOCS.read_text()
    guide = text[text.index("## Sizing") :]
    guide = guide[: guide.index("\n## ", 3)]
    for name, figure in sizing_figures().items():
        assert figure in guide, f"sizing guide: {name} = {figure} not stated"
    assert f"benchmarks/results/{BENCH_JSON.name}" in guide and "not measured" in guide.lower()
    assert "emotion bench --device cuda" in guide and "emotion soak --device cuda" in guide


def test_the_deployment_docs_name_files_that_exist():
    text = DOCS.read_text()
    paths = set(re.findall(r"`((?:deploy|docs|tests|benchmarks|training|services|shared|scripts)/[\w./-]+)`", text))
    paths |= {p for p in ("docker-compose.yml", ".env.example") if f"`{p}`" in text}
    assert len(paths) >= 10
    missing = sorted(p for p in paths if not (ROOT / p.split("::")[0]).exists())
    assert not missing, f"docs/deployment.md names missing files: {missing}"


# ---- the model-repository job's serve and rollback -----------------------------------------------------


def _fake_emotion(bin_dir: Path, log: Path) -> None:
    """An ``emotion`` that records its argv; ``export --rollback NAME`` removes NAME's newest
    version folder, as the real one does."""
    bin_dir.mkdir()
    script = bin_dir / "emotion"
    script.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {log}
if [[ $1 == export && " $* " == *" --rollback "* ]]; then
  name=${{@: -1}}
  root="$EMOTION_HOME/triton/model_repository/$name"
  newest=$(ls "$root" | grep -E '^[0-9]+$' | sort -n | tail -1)
  rm -rf "$root/$newest"
fi
""")
    script.chmod(0o755)


def _model(folder: Path, weights: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pt").write_text(weights)
    (folder / "model.yaml").write_text("registry_name: proposed\n")
    return folder


def test_serve_and_rollback_keep_the_default_model_equal_to_what_is_served(tmp_path):
    home, log = tmp_path / "home", tmp_path / "emotion.log"
    _fake_emotion(tmp_path / "bin", log)
    env = {
        "PATH": f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "EMOTION_HOME": str(home),
        "PYTHONPATH": str(ROOT),
    }
    script = str(ROOT / "deploy" / "docker" / "model-repository.sh")
    default = home / "trained" / "default"
    _model(default, "v1 weights")
    for name in ("graph_gat", "moe_fusion"):  # version 1 serves v1; version 2 pins the candidate
        _model(home / "triton" / "model_repository" / name / "1" / "trained", "v1 weights")
        _model(home / "triton" / "model_repository" / name / "2" / "trained", "v2 weights")

    subprocess.run(
        ["bash", script, "serve", str(_model(tmp_path / "new", "v2 weights"))], env=env, check=True, timeout=60
    )
    assert (default / "model.pt").read_text() == "v2 weights"
    assert (home / "trained" / "default.previous" / "model.pt").read_text() == "v1 weights"
    assert log.read_text().splitlines() == ["export --no-load --only graph_gat moe_fusion"]

    log.unlink()
    subprocess.run(["bash", script, "rollback"], env=env, check=True, timeout=60)
    assert log.read_text().splitlines() == [
        "export --no-load --rollback graph_gat",
        "export --no-load --rollback moe_fusion",
    ]
    assert (default / "model.pt").read_text() == "v1 weights", "the default is what version 1 pinned again"

    bad = subprocess.run(
        ["bash", script, "serve", str(tmp_path / "nothing")], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "no model.pt" in bad.stderr
