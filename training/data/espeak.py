"""A thin wrapper around the ``espeak-ng`` command-line synthesiser.

Each call runs one short-lived ``espeak-ng`` process (about 20 ms for a sentence), reading text or
SSML from stdin and the WAV (22.05 kHz, 16-bit) from stdout, so concurrent calls from several
worker processes do not share any state and the output is deterministic.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf

__all__ = [
    "EspeakError",
    "VoiceVariant",
    "espeak_version",
    "list_language_voices",
    "list_variants",
    "synthesize",
]

_TIMEOUT_S = 60.0


class EspeakError(RuntimeError):
    """espeak-ng is missing, lacks a voice, or failed to synthesise."""


@dataclass(frozen=True)
class VoiceVariant:
    """An espeak-ng voice variant (``espeak-ng-data/voices/!v/<file>``)."""

    file: str
    """The name used after ``+`` in ``-v en-us+<file>``."""
    name: str
    gender: str
    """``M`` or ``F`` as the variant declares it."""


def _binary() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakError("espeak-ng is not installed (apt-get install -y espeak-ng)")
    return exe


def _run(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run([_binary(), *args], input=stdin, capture_output=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        raise EspeakError(f"espeak-ng {' '.join(args)} timed out after {_TIMEOUT_S:.0f}s") from e
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise EspeakError(f"espeak-ng {' '.join(args)} failed ({proc.returncode}): {err}")
    return proc


@functools.cache
def espeak_version() -> str:
    """The ``--version`` line, e.g. ``eSpeak NG text-to-speech: 1.51  Data at: ...``."""
    return _run(["--version"]).stdout.decode("utf-8", "replace").strip().splitlines()[0]


def _parse_voice_table(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5:
            rows.append(parts)
    return rows


@functools.cache
def list_language_voices(language: str) -> tuple[str, ...]:
    """Voice names espeak-ng lists for ``language`` (``--voices=<language>``), excluding MBROLA.

    Row format: ``Pty Language Age/Gender VoiceName File [Other Languages]``; the language column
    is what ``-v`` accepts.
    """
    table = _parse_voice_table(_run([f"--voices={language}"]).stdout.decode("utf-8", "replace"))
    names = []
    for parts in table:
        lang, file = parts[1], parts[4]
        if file.startswith("mb/") or lang == "variant":
            continue
        if lang.split("-")[0] == language.split("-")[0] and lang not in names:
            names.append(lang)
    return tuple(names)


@functools.cache
def list_variants() -> tuple[VoiceVariant, ...]:
    """The installed voice variants (``--voices=variant``)."""
    table = _parse_voice_table(_run(["--voices=variant"]).stdout.decode("utf-8", "replace"))
    out = []
    for parts in table:
        # Pty variant Age/Gender Name... !v/<file> [(...)]; names may contain spaces
        file_idx = next((i for i, p in enumerate(parts) if p.startswith("!v/")), None)
        if file_idx is None:
            continue
        gender = parts[2].split("/")[-1][:1].upper()
        out.append(VoiceVariant(file=parts[file_idx][3:], name=" ".join(parts[3:file_idx]), gender=gender))
    return tuple(out)


def synthesize(
    text: str,
    voice: str,
    *,
    pitch: int = 50,
    rate: int = 175,
    amplitude: int = 100,
    ssml: bool = False,
) -> tuple[np.ndarray, int]:
    """Speak ``text`` (SSML when ``ssml``) with ``voice`` (``en-us+f3``); ``(float32 mono, rate)``.

    ``pitch`` is espeak-ng's ``-p`` (0-99, 50 = the voice's default), ``rate`` ``-s`` in words per
    minute (80-450), ``amplitude`` ``-a`` (0-200).
    """
    args = [
        "-v",
        voice,
        "-p",
        str(int(np.clip(pitch, 0, 99))),
        "-s",
        str(int(np.clip(rate, 80, 450))),
        "-a",
        str(int(np.clip(amplitude, 0, 200))),
        "-b",
        "1",
        "--stdin",
        "--stdout",
    ]
    if ssml:
        args.insert(0, "-m")
    proc = _run(args, stdin=text.encode("utf-8"))
    data = proc.stdout
    start = data.find(b"RIFF")
    if start < 0 or len(data) - start <= 44:
        raise EspeakError(f"espeak-ng produced no audio for voice {voice!r} and text {text[:60]!r}")
    try:
        samples, sr = sf.read(io.BytesIO(data[start:]), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise EspeakError(f"espeak-ng output is not a readable WAV ({e})") from e
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise EspeakError(f"espeak-ng produced no audio for voice {voice!r} and text {text[:60]!r}")
    return samples.astype(np.float32, copy=False), int(sr)
