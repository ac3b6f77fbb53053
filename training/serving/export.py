"""``emotion export``: write the versioned Triton model repository of the five served models.

=================  ======================================================  =========================
model              serves                                                  model_version
=================  ======================================================  =========================
``asr``            the bundle's Whisper (faster-whisper), word timestamps  bundle version of the ASR
``text_encoder``   the bundle's text encoder                               bundle version
``speech_encoder`` the bundle's speech encoder                             bundle version
``graph_gat``      the trained model's time-aligned GAT                    ``training.checkpoint.model_version``
``moe_fusion``     the trained model after its GAT (MoE branches + fusion) the same
=================  ======================================================  =========================

Versioning: each model folder holds integer version folders; a version folder is written once
and never changed.  An export compares what it would write (module, model version, the bytes of
the copied trained weights: its *fingerprint*) with the newest version folder's ``export.json``:
unchanged models are not rewritten (only ``config.pbtxt`` is re-rendered if settings changed it);
a changed model gets the next integer folder and the previous ones are kept.  Triton serves the
newest (``version_policy: latest 1``) and the ``model_version`` config parameter, which the
services read, always names what the newest folder serves.

``graph_gat`` and ``moe_fusion`` copy the trained ``model.pt``/``model.yaml`` into
``<version>/trained/`` and write their network for ONNX Runtime from it into ``<version>/network/``
(what their CPU instances run, :mod:`training.serving.networks`), so a version folder pins its weights: rolling back is removing the newest
folder (``emotion export --rollback NAME`` does that and restores the previous ``config.pbtxt``;
then reload the model).  The encoders pin their bundle version instead (the weights live in the
bundle, too big to copy): a version folder refuses to load when the bundle no longer holds the
version it was exported for.  Their CPU instances run ONNX Runtime on the encoder's network, which
the export writes beside the bundle once per encoder version (:func:`export_network`).

When the trained model folder does not exist yet (the demo trains it later), the encoders are
exported and ``graph_gat``/``moe_fusion`` are skipped with a log line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared.files import sha256_file, write_text_atomic
from shared.settings import Settings

from .repository import (
    CODE_DIR,
    EXPORT_FILE,
    ModelSpec,
    asr_spec,
    graph_gat_spec,
    model_code,
    model_py,
    moe_fusion_spec,
    read_export,
    render_config,
    speech_encoder_spec,
    text_encoder_spec,
    versions,
)

log = logging.getLogger(__name__)

MODEL_NAMES: tuple[str, ...] = ("asr", "text_encoder", "speech_encoder", "graph_gat", "moe_fusion")
ENCODERS: tuple[str, ...] = ("asr", "text_encoder", "speech_encoder")
TRAINED: tuple[str, ...] = ("graph_gat", "moe_fusion")

Status = Literal["written", "unchanged", "config", "skipped", "failed", "rolled back"]


class ExportError(RuntimeError):
    """An export or rollback that cannot be done (nothing to roll back to, unknown model)."""


@dataclass
class ExportedModel:
    name: str
    status: Status
    """``written`` (new version folder), ``unchanged``, ``config`` (same version, config.pbtxt
    re-rendered), ``skipped`` (nothing to export yet), ``failed``, ``rolled back``."""
    version: int | None = None
    """The version folder Triton now serves (None when there is none)."""
    model_version: str = ""
    path: Path | None = None
    note: str = ""

    @property
    def changed(self) -> bool:
        """Whether a running Triton must reload this model to serve what is on disk."""
        return self.status in ("written", "config", "rolled back")


@dataclass
class ExportReport:
    repository: Path
    models: list[ExportedModel] = field(default_factory=list)

    def __getitem__(self, name: str) -> ExportedModel:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def changed(self) -> list[str]:
        return [m.name for m in self.models if m.changed]

    @property
    def failed(self) -> list[str]:
        return [m.name for m in self.models if m.status == "failed"]

    def as_dict(self) -> dict:
        return {
            "repository": str(self.repository),
            "models": [
                {
                    "name": m.name,
                    "status": m.status,
                    "version": m.version,
                    "model_version": m.model_version,
                    "path": str(m.path) if m.path else None,
                    "note": m.note,
                }
                for m in self.models
            ],
        }

    def table(self) -> str:
        rows = [("model", "status", "version", "model_version", "note")]
        rows += [
            (m.name, m.status, "-" if m.version is None else str(m.version), m.model_version or "-", m.note)
            for m in self.models
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + ("  " + r[4] if r[4] else "")
            for r in rows
        ]
        return "\n".join(lines + [f"repository: {self.repository}"])


# ---- what each model would publish -------------------------------------------------------------


@dataclass
class _Candidate:
    spec: ModelSpec
    files: dict[str, Path] = field(default_factory=dict)
    """Files copied into the version folder: relative path -> source."""
    source: str = ""
    network_of: Path | None = None
    """The trained model whose network for ONNX Runtime a new version folder gets
    (:func:`training.serving.networks.export_trained_network`; derived from the files, so not
    part of the fingerprint)."""


def _fingerprint(candidate: _Candidate) -> str:
    data = {
        "module": candidate.spec.module,
        "model_version": candidate.spec.model_version,
        "files": {rel: sha256_file(src) for rel, src in sorted(candidate.files.items())},
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _bundle_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _encoder_candidate(settings: Settings, name: str) -> _Candidate:
    from training.model_store import resolve
    from training.encoders.speech import SpeechReading

    resolved = resolve(settings, name)
    if name == "asr":
        spec = asr_spec(settings, resolved.version, resolved.name)
    elif name == "text_encoder":
        spec = text_encoder_spec(
            settings, resolved.version, int(_bundle_config(resolved.path)["hidden_size"]), resolved.name
        )
    else:
        config = _bundle_config(resolved.path)
        reading = SpeechReading.of_settings(settings)
        dim = reading.width(int(config["d_model"] if config.get("model_type") == "whisper" else config["hidden_size"]))
        spec = speech_encoder_spec(settings, reading.version(resolved.version), dim, resolved.name)
    return _Candidate(spec, source=str(resolved.path))


def export_network(settings: Settings, name: str) -> Path:
    """The network of the bundle encoder serving ``name`` (``text_encoder``, ``speech_encoder``) for
    ONNX Runtime, which the model's CPU instances run: written under the bundle once per encoder
    version (and speech layer), about 10-20 s on a CPU; an existing one is kept."""
    from training.encoders.onnx import network_dir
    from training.encoders.speech import SpeechEncoder
    from training.encoders.text import TextEncoder
    from training.model_store import resolve

    version = resolve(settings, name).version
    layer = settings.models.speech_layer if name == "speech_encoder" else None
    folder = network_dir(settings.models_dir, version, layer)
    if folder.is_dir():
        return folder
    log.info("Triton model %s: exporting the network of %s for ONNX Runtime", name, version)
    encoder = (TextEncoder if name == "text_encoder" else SpeechEncoder).from_bundle(settings, device="cpu")
    return encoder.export_network(settings.models_dir)


def _trained_candidates(settings: Settings, model_dir: Path, names: list[str]) -> dict[str, _Candidate | str]:
    """Per trained model name: its candidate, or why it is skipped (a string)."""
    from training.checkpoint import MODEL_FILE, META_FILE, model_version, read_meta
    from training.models import FusionConfig, build_model

    meta = read_meta(model_dir)
    version = model_version(model_dir)
    config = FusionConfig.from_dict(meta.config)
    model = build_model(meta.registry_name, config)  # a few MB: only to see which parts it has
    files = {f"trained/{MODEL_FILE}": model_dir / MODEL_FILE, f"trained/{META_FILE}": model_dir / META_FILE}
    dims = dict(d_text=config.d_text, d_speech=config.d_speech, d_graph=config.d_graph)
    out: dict[str, _Candidate | str] = {}
    if "graph_gat" in names:
        if getattr(model, "gat", None) is None:
            out["graph_gat"] = f"{meta.registry_name} has no time-aligned GAT"
        else:
            spec = graph_gat_spec(settings, version, model_dir, edge_rule=config.edge_rule, **dims)
            out["graph_gat"] = _Candidate(spec, files, str(model_dir), network_of=model_dir)
    if "moe_fusion" in names:
        branches = list(getattr(model, "branches", {}) or {})
        spec = moe_fusion_spec(
            settings, version, model_dir, class_names=meta.class_names or config.class_names, branches=branches, **dims
        )
        out["moe_fusion"] = _Candidate(spec, files, str(model_dir), network_of=model_dir)
    return out


def _as_trained(settings: Settings, model_dir: Path) -> Settings:
    """``settings`` reading the speech encoder as the trained model in ``model_dir`` was trained
    (layer and level, :class:`~training.encoders.speech.SpeechReading`, recorded in its speech
    encoder version), so that the served ``speech_encoder`` always gives the frames the served model expects."""
    from training.checkpoint import META_FILE, read_meta
    from training.encoders.speech import SpeechReading

    if not (model_dir / META_FILE).is_file():
        return settings
    try:
        trained_on = (read_meta(model_dir).encoders or {}).get("speech_encoder")
    except Exception:  # noqa: BLE001 - an unreadable model is reported by the trained models' export
        return settings
    reading = SpeechReading.of_version(trained_on) if trained_on else SpeechReading.of_settings(settings)
    if reading == SpeechReading.of_settings(settings):
        return settings
    log.info(
        "%s was trained on the speech encoder read as %s: the speech_encoder model serves that (the settings say %s)",
        model_dir,
        reading,
        SpeechReading.of_settings(settings),
    )
    return reading.applied(settings)


def _check_encoders(settings: Settings, model_dir: Path) -> list[str]:
    """Warnings when the trained model was trained on other encoders than the bundle serves."""
    from training.model_store import resolve
    from training.checkpoint import read_meta
    from training.encoders.speech import SpeechReading
    from training.models import FusionConfig

    meta = read_meta(model_dir)
    config = FusionConfig.from_dict(meta.config)
    notes = []
    for role, expected in (meta.encoders or {}).items():
        try:
            actual = resolve(settings, role).version
            if role == "speech_encoder":
                actual = SpeechReading.of_settings(settings).version(actual)
        except Exception:  # noqa: BLE001 - the encoder's own export reports bundle problems
            continue
        if actual != expected:
            notes.append(f"trained on {role} {expected}, bundle serves {actual}")
    for role, key, dim in (("text_encoder", "hidden_size", config.d_text), ("speech_encoder", None, config.d_speech)):
        try:
            c = _bundle_config(resolve(settings, role).path)
        except Exception:  # noqa: BLE001
            continue
        width = c.get("d_model") if key is None and c.get("model_type") == "whisper" else c.get("hidden_size")
        if width is not None and role == "speech_encoder":
            width = SpeechReading.of_settings(settings).width(int(width))
        if width is not None and int(width) != dim:
            notes.append(f"model expects {role} width {dim}, bundle's is {width}")
    for n in notes:
        log.warning("%s: %s", model_dir, n)
    return notes


# ---- publishing ----------------------------------------------------------------------------------


def _publish(candidate: _Candidate, settings: Settings, repository: Path) -> ExportedModel:
    spec = candidate.spec
    code = {f"{CODE_DIR}/{rel}": src for rel, src in model_code(spec.module).items()}
    candidate = dataclasses.replace(candidate, files={**candidate.files, **code})
    root = repository / spec.name
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # an export that died half-way
        shutil.rmtree(stale, ignore_errors=True)
    existing = versions(root)
    fingerprint = _fingerprint(candidate)
    config = render_config(spec, settings)
    config_path = root / "config.pbtxt"
    if existing:
        newest = root / str(existing[-1])
        info = read_export(newest)
        if info.get("fingerprint") == fingerprint:
            if config_path.is_file() and config_path.read_text() == config:
                return ExportedModel(spec.name, "unchanged", existing[-1], spec.model_version, root)
            write_text_atomic(newest / EXPORT_FILE, json.dumps({**info, "config": config}, indent=2) + "\n")
            write_text_atomic(config_path, config)
            log.info("Triton model %s: version %d unchanged, config.pbtxt updated", spec.name, existing[-1])
            return ExportedModel(
                spec.name, "config", existing[-1], spec.model_version, root, "config.pbtxt re-rendered"
            )
    version = (existing[-1] if existing else 0) + 1
    tmp = root / f".tmp-{version}-{os.getpid()}"
    tmp.mkdir()
    try:
        (tmp / "model.py").write_text(model_py(spec))
        for rel, src in candidate.files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / rel)
        if candidate.network_of is not None:
            from .networks import NETWORK_DIR, export_trained_network

            try:
                export_trained_network(spec.name, candidate.network_of, tmp / NETWORK_DIR)
            except Exception as exc:  # noqa: BLE001 - served on torch instead, and said so
                log.warning(
                    "Triton model %s: the model's code does not export to ONNX (%s: %s); "
                    "its CPU instances run it on torch",
                    spec.name,
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "",
                )
        info = {
            "model": spec.name,
            "version": version,
            "model_version": spec.model_version,
            "fingerprint": fingerprint,
            "module": spec.module,
            "source": candidate.source,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": config,
        }
        (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")
        os.rename(tmp, root / str(version))  # the version folder appears complete or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(config_path, config)
    kept = f"keeps {', '.join(map(str, existing))}" if existing else ""
    log.info("Triton model %s: wrote version %d (%s) %s", spec.name, version, spec.model_version, kept)
    return ExportedModel(spec.name, "written", version, spec.model_version, root, kept)


def export_repository(
    settings: Settings,
    model_dir: Path | None = None,
    repository: Path | None = None,
    models: list[str] | None = None,
) -> ExportReport:
    """Write (the changed ones of) the five Triton models; see the module docstring.

    ``model_dir``: the trained model (default ``settings.default_model_dir``; when that does not
    exist yet ``graph_gat``/``moe_fusion`` are skipped; an explicit ``model_dir`` that does not
    exist is a failure).  ``repository``: default ``settings.model_repository``.  ``models``: a
    subset of :data:`MODEL_NAMES` (default all).
    """
    from training.checkpoint import META_FILE

    names = list(MODEL_NAMES) if not models else list(dict.fromkeys(models))
    unknown = sorted(set(names) - set(MODEL_NAMES))
    if unknown:
        raise ExportError(f"unknown model(s) {unknown}; choose from {list(MODEL_NAMES)}")
    repository = Path(repository or settings.model_repository)
    repository.mkdir(parents=True, exist_ok=True)
    explicit = model_dir is not None
    model_dir = Path(model_dir or settings.default_model_dir)
    settings = _as_trained(settings, model_dir)
    report = ExportReport(repository)
    results: dict[str, ExportedModel] = {}

    for name in (n for n in names if n in ENCODERS):
        try:
            if name in ("text_encoder", "speech_encoder"):
                export_network(settings, name)
            results[name] = _publish(_encoder_candidate(settings, name), settings, repository)
        except Exception as exc:  # noqa: BLE001 - reported per model; the others still export
            log.error("Triton model %s not exported: %s", name, exc)
            results[name] = ExportedModel(name, "failed", note=f"{type(exc).__name__}: {exc}")

    trained = [n for n in names if n in TRAINED]
    if trained:
        if not (model_dir / META_FILE).is_file():
            why = f"no trained model in {model_dir}"
            if explicit:
                log.error("%s: %s not exported", why, ", ".join(trained))
            else:
                log.info("%s yet: %s skipped (export again after `emotion train`)", why, ", ".join(trained))
            for name in trained:
                results[name] = ExportedModel(name, "failed" if explicit else "skipped", note=why)
        else:
            try:
                notes = _check_encoders(settings, model_dir)
                candidates = _trained_candidates(settings, model_dir, trained)
            except Exception as exc:  # noqa: BLE001
                log.error("trained model %s unreadable: %s", model_dir, exc)
                candidates, notes = {n: exc for n in trained}, []  # type: ignore[misc]
            for name in trained:
                c = candidates[name]
                if isinstance(c, Exception):
                    results[name] = ExportedModel(name, "failed", note=f"{type(c).__name__}: {c}")
                elif isinstance(c, str):
                    log.info("Triton model %s skipped: %s", name, c)
                    results[name] = ExportedModel(name, "skipped", note=c)
                else:
                    results[name] = _publish(c, settings, repository)
                    if notes:
                        results[name].note = "; ".join(filter(None, [results[name].note, *notes]))

    report.models = [results[n] for n in names]
    return report


def rollback(settings: Settings, name: str, repository: Path | None = None) -> ExportedModel:
    """Remove ``name``'s newest version folder and restore the previous version's config.pbtxt
    (whose ``model_version`` parameter names what the previous folder serves)."""
    if name not in MODEL_NAMES:
        raise ExportError(f"unknown model {name!r}; choose from {list(MODEL_NAMES)}")
    root = Path(repository or settings.model_repository) / name
    existing = versions(root)
    if len(existing) < 2:
        raise ExportError(f"{root}: {len(existing)} version(s), nothing to roll back to")
    newest, previous = existing[-1], existing[-2]
    info = read_export(root / str(previous))
    shutil.rmtree(root / str(newest))
    note = f"removed version {newest}"
    if info.get("config"):
        write_text_atomic(root / "config.pbtxt", info["config"])
    else:
        note += f"; version {previous} has no {EXPORT_FILE}: config.pbtxt left as it was"
    log.info("Triton model %s rolled back to version %d (%s)", name, previous, note)
    return ExportedModel(name, "rolled back", previous, info.get("model_version", ""), root, note)


def load_into_triton(settings: Settings, names: list[str]) -> list[str]:
    """Ask a running Triton (``settings.triton``, explicit model control) to (re)load ``names``;
    returns the models loaded, ``[]`` when no server listens."""
    t = settings.triton
    if not names:
        return []
    try:
        socket.create_connection((t.host, t.http_port), timeout=1.0).close()
    except OSError:  # no Triton listens
        return []
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(
        url=t.http_url, connection_timeout=5.0, network_timeout=t.startup_timeout_s
    )
    try:
        for name in names:
            t0 = time.monotonic()
            client.load_model(name)
            log.info("Triton loaded %s in %.1f s", name, time.monotonic() - t0)
    finally:
        client.close()
    return list(names)


# ---- CLI -------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``emotion export``."""
    parser.description = (
        "Write config.pbtxt and a versioned model.py per model (asr, text_encoder, speech_encoder, graph_gat, "
        "moe_fusion) into <home>/triton/model_repository; a changed model gets the next version folder, the "
        "previous one is kept for rollback."
    )
    parser.add_argument(
        "--model",
        type=Path,
        dest="model_dir",
        metavar="DIR",
        help="trained model folder to serve (default: <home>/trained/default)",
    )
    parser.add_argument(
        "--repository",
        type=Path,
        metavar="DIR",
        help="model repository (default: <home>/triton/model_repository, EMOTION_TRITON__MODEL_REPOSITORY)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=MODEL_NAMES,
        metavar="NAME",
        help=f"export only these models ({', '.join(MODEL_NAMES)})",
    )
    parser.add_argument(
        "--rollback",
        choices=MODEL_NAMES,
        metavar="NAME",
        help="remove NAME's newest version folder and serve the previous one",
    )
    parser.add_argument(
        "--no-load", action="store_true", help="do not ask a running Triton of this stack to load the changed models"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``emotion export``: print a table of what was written; exit 1 when a model failed."""
    repository = getattr(args, "repository", None)
    served = Path(repository or settings.model_repository) == settings.model_repository
    if getattr(args, "rollback", None):
        try:
            result = rollback(settings, args.rollback, repository)
        except ExportError as exc:
            print(f"rollback: {exc}")
            return 1
        report = ExportReport(Path(repository or settings.model_repository), [result])
    else:
        report = export_repository(settings, getattr(args, "model_dir", None), repository, getattr(args, "only", None))
    loaded: list[str] = []
    if served and not getattr(args, "no_load", False):
        try:
            loaded = load_into_triton(settings, report.changed)
        except Exception as exc:  # noqa: BLE001 - the files are written; say why the server did not take them
            print(f"Triton did not load {report.changed}: {exc}")
            return 1
    if getattr(args, "json", False):
        print(json.dumps({**report.as_dict(), "loaded": loaded}, indent=2))
    else:
        print(report.table())
        if loaded:
            print(f"loaded into the running Triton: {', '.join(loaded)}")
    return 1 if report.failed else 0
