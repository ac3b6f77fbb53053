"""Synthetic call-centre calls: whole conversations to stream through the platform, with ground truth.

Each call is a dialogue between an agent and a customer built from the emotional utterances of
:mod:`training.data.synthetic` (espeak-ng voices, emotional prosody and wording, the telephone
channel); this module only plans the conversation and lays the turns out on a timeline:

* **turns** -- the agent opens, then agent and customer alternate (``utterances_per_call`` turns
  in all), separated by 0.6-1.5 s of silence; turns never overlap; a turn's start and end are its
  speech's (espeak-ng's leading and trailing silence is cut);
* **trajectory** -- the customer is either ``calm`` (neutral, sometimes pleased at the end) or
  ``escalating`` (neutral at first, then disgust and anger); the agent is mostly neutral, sometimes
  happy; the wording and the voice both carry the emotion;
* **speakers** -- one agent and one customer voice per call, each with its own telephone channel
  conditions (noise, SNR, gain, mu-law) for every turn it speaks;
* **channels** -- stereo puts the agent on channel 0 and the customer on channel 1 (as call-centre
  recorders do); the channel not speaking carries only a low noise floor (about -66 dBFS). Mono
  mixes both channels.

:func:`generate_calls` writes ``<call_id>.wav`` (16-bit PCM) and ``<call_id>.json`` (the ground
truth: every turn's speaker, start and end in seconds, text, label and language) and returns
:class:`CallSpec` objects; :func:`read_call_spec` reads a ``.json`` back. A call depends only on
``(seed, its index)``, so the same seed gives byte-identical files, and the first calls of a larger
run are the calls of a smaller one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from training.data.espeak import EspeakError
from training.data.prosody import Speaker, chunk_words, sample_prosody, to_ssml
from training.data.synthetic import SpeakerFactory, UtteranceSpec, render_audio
from training.data.telephony import Channel, sample_channel
from training.data.templates import LANGUAGES, TOPICS, compose

__all__ = ["CallSpec", "CallTurn", "generate_calls", "read_call_spec"]

log = logging.getLogger(__name__)

ROLES: tuple[str, str] = ("agent", "customer")
"""Stereo channel order: agent on channel 0, customer on channel 1."""
TRAJECTORIES: tuple[str, ...] = ("calm", "escalating")
GAP_S: tuple[float, float] = (0.6, 1.5)
"""Silence between two turns (uniform)."""
LEAD_S: tuple[float, float] = (0.2, 0.6)
"""Silence before the first turn and after the last one (uniform)."""
NOISE_FLOOR_DBFS = -66.0
"""RMS level of the line noise on every channel, in and between turns."""
AGENT_HAPPY = 0.25
"""Probability that an agent turn is happy rather than neutral."""
_PLAN_STREAM = 11
"""SeedSequence stream of the call plans (:mod:`training.data.synthetic` uses 0-2)."""
TRIM_FRAME_S = 0.01
TRIM_MARGIN_S = 0.06
"""Kept before the first and after the last speech frame of an utterance."""
FADE_S = 0.01


@dataclass(frozen=True)
class CallTurn:
    """One utterance of a call, as placed on the call's timeline (seconds from the call start)."""

    speaker: str
    """``agent`` or ``customer``."""
    start: float
    end: float
    text: str
    label: str
    language: str


@dataclass(frozen=True)
class CallSpec:
    """A generated call: its audio file and its ground truth."""

    call_id: str
    path: Path
    """The ``.wav`` file; the ground truth is beside it with the ``.json`` suffix."""
    channel_roles: tuple[str, ...]
    """``("agent", "customer")`` for stereo, ``("mono",)`` for mono."""
    sample_rate: int
    duration: float
    turns: tuple[CallTurn, ...]
    language: str
    topic: str
    """``billing``, ``delivery``, ``refund``, ``technical`` or ``cancellation``."""
    trajectory: str
    """The customer's: ``calm`` or ``escalating``."""

    @property
    def truth_path(self) -> Path:
        return self.path.with_suffix(".json")

    def to_dict(self) -> dict:
        return {
            "call_id": self.call_id,
            "audio": self.path.name,
            "channel_roles": list(self.channel_roles),
            "sample_rate": self.sample_rate,
            "duration": self.duration,
            "language": self.language,
            "topic": self.topic,
            "trajectory": self.trajectory,
            "turns": [asdict(t) for t in self.turns],
        }


def read_call_spec(path: str | Path) -> CallSpec:
    """The :class:`CallSpec` of a ground-truth ``.json`` written by :func:`generate_calls`."""
    p = Path(path)
    obj = json.loads(p.read_text(encoding="utf-8"))
    return CallSpec(
        call_id=obj["call_id"],
        path=p.parent / obj["audio"],
        channel_roles=tuple(obj["channel_roles"]),
        sample_rate=int(obj["sample_rate"]),
        duration=float(obj["duration"]),
        turns=tuple(CallTurn(**t) for t in obj["turns"]),
        language=obj["language"],
        topic=obj["topic"],
        trajectory=obj["trajectory"],
    )


# ---- plan ---------------------------------------------------------------------------------------


def _customer_labels(trajectory: str, n: int, rng: np.random.Generator) -> list[str]:
    """The customer's emotion per turn: calm stays neutral (maybe pleased at the end); escalating
    starts neutral and turns negative after the first third (disgust or anger, more and more often
    anger); a lone customer turn of an escalating call is negative."""
    if trajectory == "calm":
        labels = ["neutral"] * n
        if n > 1 and rng.random() < 0.3:
            labels[-1] = "happiness"
        return labels
    onset = min(n - 1, max(1, n // 3))
    labels = ["neutral"] * onset
    for k in range(n - onset):
        p_anger = min(0.9, 0.4 + 0.25 * k)
        labels.append("anger" if rng.random() < p_anger else "disgust")
    return labels


def _plan_call(
    index: int, seed: int, language: str, turns_range: tuple[int, int], sample_rate: int, path: Path
) -> tuple[str, str, list[UtteranceSpec], np.random.Generator]:
    """Topic, trajectory and the utterance specs of call ``index``, plus the generator that lays
    them out (everything drawn from ``(seed, index)`` only)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _PLAN_STREAM, index]))
    topic = TOPICS[int(rng.integers(len(TOPICS)))]
    trajectory = TRAJECTORIES[int(rng.integers(len(TRAJECTORIES)))]
    n_turns = int(rng.integers(turns_range[0], turns_range[1] + 1))
    roles = [ROLES[k % 2] for k in range(n_turns)]
    customer = iter(_customer_labels(trajectory, roles.count("customer"), rng))
    factory = SpeakerFactory(language, rng)
    speakers: dict[str, Speaker] = {role: factory.new(role) for role in ROLES}
    channels: dict[str, Channel] = {role: sample_channel(rng, telephony=True) for role in ROLES}
    call_id = path.stem
    specs = []
    for turn, role in enumerate(roles):
        if role == "customer":
            label = next(customer)
        else:
            label = "happiness" if rng.random() < AGENT_HAPPY else "neutral"
        text = compose(language, role, topic, label, True, rng)
        phrases = chunk_words(text, language, rng)
        prosody = sample_prosody(label, speakers[role], len(phrases), rng)
        specs.append(
            UtteranceSpec(
                index=index * 1000 + turn,
                id=f"{call_id}-t{turn:02d}",
                path=str(path),
                label=label,
                text=text,
                ssml=to_ssml(phrases, prosody),
                language=language,
                speaker=speakers[role],
                split="",
                call_id=call_id,
                turn=turn,
                topic=topic,
                cue="both",
                prosody=prosody,
                channel=channels[role],
                seed=seed,
                sample_rate=sample_rate,
            )
        )
    return topic, trajectory, specs, rng


# ---- render -------------------------------------------------------------------------------------


def _trim_to_speech(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut espeak-ng's leading and trailing silence (filled with line noise by the channel), so a
    turn's bounds are its speech's, give or take :data:`TRIM_MARGIN_S`; short fades avoid clicks.

    The noise level comes from the last 150 ms, which espeak-ng always leaves silent; speech frames
    are 6 dB above its loudest frame (and within 50 dB of the utterance's peak)."""
    n = max(1, int(TRIM_FRAME_S * sample_rate))
    frames = x[: x.size // n * n].reshape(-1, n).astype(np.float64)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    tail = level[-max(1, int(0.15 / TRIM_FRAME_S)) :]
    speech = np.flatnonzero(level > max(tail.max() + 6, level.max() - 50))
    if speech.size == 0:
        return x
    margin = int(TRIM_MARGIN_S * sample_rate)
    out = x[max(0, speech[0] * n - margin) : min(x.size, (speech[-1] + 1) * n + margin)].copy()
    fade = min(int(FADE_S * sample_rate), out.size // 2)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    out[:fade] *= ramp
    out[out.size - fade :] *= ramp[::-1]
    return out


def _render_call(
    index: int, seed: int, language: str, turns_range: tuple[int, int], sample_rate: int, stereo: bool, path: Path
) -> CallSpec:
    """Render every turn, lay the turns out with gaps on the speakers' channels, write wav + json."""
    topic, trajectory, specs, rng = _plan_call(index, seed, language, turns_range, sample_rate, path)
    pieces: list[np.ndarray] = []
    for spec in specs:
        try:
            pieces.append(_trim_to_speech(render_audio(spec), sample_rate))
        except Exception as e:  # name the call and turn in whatever went wrong
            raise EspeakError(f"rendering {spec.id} ({spec.speaker.voice}): {e}") from e
    gaps = rng.uniform(*GAP_S, size=max(0, len(pieces) - 1))
    lead, tail = rng.uniform(*LEAD_S, size=2)
    starts = []
    t = int(round(lead * sample_rate))
    for k, piece in enumerate(pieces):
        starts.append(t)
        t += piece.size + (int(round(gaps[k] * sample_rate)) if k < gaps.size else 0)
    total = t + int(round(tail * sample_rate))
    floor = 10 ** (NOISE_FLOOR_DBFS / 20)
    audio = rng.normal(0.0, floor, size=(total, len(ROLES))).astype(np.float32)
    turns = []
    for spec, piece, start in zip(specs, pieces, starts, strict=True):
        role = spec.speaker.role
        audio[start : start + piece.size, ROLES.index(role)] += piece
        turns.append(
            CallTurn(
                speaker=role,
                start=round(start / sample_rate, 3),
                end=round((start + piece.size) / sample_rate, 3),
                text=spec.text,
                label=spec.label,
                language=language,
            )
        )
    if not stereo:
        audio = audio.sum(axis=1, keepdims=True)
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    sf.write(str(path), pcm, sample_rate, subtype="PCM_16", format="WAV")
    call = CallSpec(
        call_id=path.stem,
        path=path,
        channel_roles=ROLES if stereo else ("mono",),
        sample_rate=sample_rate,
        duration=round(total / sample_rate, 3),
        turns=tuple(turns),
        language=language,
        topic=topic,
        trajectory=trajectory,
    )
    text = json.dumps(call.to_dict(), ensure_ascii=False, indent=2) + "\n"
    call.truth_path.write_text(text, encoding="utf-8")
    return call


def generate_calls(
    out_dir: str | Path,
    n_calls: int,
    seed: int = 0,
    utterances_per_call: tuple[int, int] = (3, 6),
    languages: Sequence[str] = ("en", "ko"),
    stereo: bool = True,
    sample_rate: int = 8000,
    *,
    call_prefix: str = "call",
    progress: bool = True,
) -> list[CallSpec]:
    """Generate ``n_calls`` agent/customer calls into OUT_DIR; returns their :class:`CallSpec`.

    Call ``k`` (0-based) is ``<call_prefix>-s<seed>-<k+1:04d>`` in ``languages[k % len]``, with
    between ``utterances_per_call[0]`` and ``[1]`` turns (inclusive). Files: ``<call_id>.wav``
    (16-bit PCM at SAMPLE_RATE, stereo agent/customer or mono) and ``<call_id>.json`` (ground truth).
    Existing files of the same names are overwritten. Needs the ``espeak-ng`` binary; costs about
    0.1-0.2 s of CPU per turn.
    """
    languages = tuple(dict.fromkeys(languages))
    if not languages or any(lang not in LANGUAGES for lang in languages):
        raise ValueError(f"languages must be a non-empty subset of {LANGUAGES}, got {languages}")
    lo, hi = utterances_per_call
    if not 2 <= lo <= hi:
        raise ValueError(f"utterances_per_call must be (lo, hi) with 2 <= lo <= hi, got {utterances_per_call}")
    if n_calls < 0:
        raise ValueError(f"n_calls must be >= 0, got {n_calls}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    calls = []
    for k in tqdm(range(n_calls), unit="call", desc="calls", disable=not progress, dynamic_ncols=True):
        path = out / f"{call_prefix}-s{seed}-{k + 1:04d}.wav"
        calls.append(_render_call(k, seed, languages[k % len(languages)], (lo, hi), sample_rate, stereo, path))
    log.info("calls: wrote %d calls (%.1f s of audio) to %s", len(calls), sum(c.duration for c in calls), out)
    return calls
