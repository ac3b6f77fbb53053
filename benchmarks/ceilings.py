"""The ceilings the pipeline is measured against, on the same audio, in this process.

* :func:`asr_ceiling`: the ASR stage alone, bare faster-whisper: the calls cut into utterances by
  the same voice-activity segmenter, then transcribed by the same
  :class:`training.encoders.asr.Transcriber` the ``asr`` Triton model runs (same model, beam 1,
  word timestamps), with no Kafka, Redis, Triton or other model.  ``workers`` threads, each with
  its own Whisper of ``threads`` CPU threads, share the work (calls, then utterances); the best
  split of the cores is the ceiling.
* :func:`chain_ceiling`: the whole model chain in one process, one utterance at a time, every
  model with all the cores (or on the GPU): segment, transcribe, encode text and speech, GAT and fusion
  (:mod:`training.models`, the trained weights).

Throughput is seconds of call audio per wall second, as for the pipeline.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.workload import CallSegment, Workload, segment_call
from shared.settings import Settings
from training.encoders.packing import PackingOptions

log = logging.getLogger(__name__)

PACKED_QUEUE = 16
"""Utterances a packed ASR ceiling's worker takes at once: the ``asr`` model's batch when packing."""


def asr_ceiling(
    settings: Settings,
    workload: Workload,
    n: int,
    workers: int,
    threads: int,
    packing: PackingOptions | None = None,
    window_s: float | None = None,
) -> dict:
    """Segment and transcribe the first ``n`` calls with ``workers`` x ``threads``: one utterance
    at a time, or (``packing``) as a loaded ``asr`` model sees them, each worker taking the next
    :data:`PACKED_QUEUE` utterances waiting (in the order the calls' utterances end) and packing
    them into shared Whisper windows. ``window_s``: Whisper's shortest encoder window, when not
    the configured ``models.asr_window_s`` (30: faster-whisper's own, the ceiling before it)."""
    from training.encoders.asr import Transcriber

    local = threading.local()

    def transcriber() -> Transcriber:
        if not hasattr(local, "model"):
            local.model = Transcriber.from_bundle(settings, cpu_threads=threads, beam_size=1, window_s=window_s)
        return local.model

    everyone = threading.Barrier(workers)

    def warm(_: int) -> None:
        everyone.wait()  # one task per worker thread: each loads its own model
        transcriber().transcribe(np.sin(np.arange(16000, dtype=np.float32) / 10) * 0.1)

    calls = workload.calls[:n]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(warm, range(workers)))  # outside the timed part
        t0 = time.perf_counter()
        segments = [s for found in pool.map(lambda c: segment_call(c, settings.segmentation), calls) for s in found]
        t_segmented = time.perf_counter()
        if packing is None:
            texts = list(pool.map(lambda s: transcriber().transcribe(s.audio, language=s.language).text, segments))
        else:
            queue = sorted(segments, key=lambda s: s.segment.end_s)
            chunks = [queue[i : i + PACKED_QUEUE] for i in range(0, len(queue), PACKED_QUEUE)]
            texts = [
                t.text
                for done in pool.map(
                    lambda c: transcriber().transcribe_many(
                        [s.audio for s in c], [s.language for s in c], packing=packing
                    ),
                    chunks,
                )
                for t in done
            ]
        wall = time.perf_counter() - t0
    audio_s = workload.audio_seconds(n)
    window = settings.models.asr_window_s if window_s is None else window_s
    log.info(
        "asr ceiling %dx%d%s, %g s windows: %d utterances of %d calls in %.1f s -> %.2fx realtime",
        workers,
        threads,
        ", packed" if packing else "",
        window,
        len(segments),
        n,
        wall,
        audio_s / wall,
    )
    return {
        "workers": workers,
        "threads": threads,
        "packed": packing is not None,
        "window_s": window,
        "calls": n,
        "audio_s": round(audio_s, 2),
        "utterances": len(segments),
        "words": sum(len(t.split()) for t in texts),
        "segmentation_s": round(t_segmented - t0, 2),
        "wall_s": round(wall, 2),
        "throughput_x": round(audio_s / wall, 3),
    }


def chain_ceiling(settings: Settings, workload: Workload, n: int, model_dir: Path, threads: int) -> dict:
    """The first ``n`` calls through every model, one utterance at a time, ``threads`` each."""
    import torch

    from training.checkpoint import load_model
    from training.encoders import SpeechEncoder, TextEncoder
    from training.encoders.asr import Transcriber
    from training.models import UtteranceFeatures, collate

    from training.encoders.common import pick_device

    device = pick_device(settings.models.device)
    transcriber = Transcriber.from_bundle(settings, cpu_threads=threads, beam_size=1)
    text_encoder = TextEncoder.from_bundle(settings, threads=threads)
    speech_encoder = SpeechEncoder.from_bundle(settings, threads=threads)
    model, _ = load_model(model_dir, device=device)
    model.eval()
    torch.set_num_threads(threads)

    def one(s: CallSegment) -> str:
        t = transcriber.transcribe(s.audio, language=s.language)
        text = text_encoder.encode([t.text])
        speech = speech_encoder.encode([s.audio])
        example = UtteranceFeatures(
            text_hidden=text.hidden[0],
            text_mask=text.mask[0],
            token_offsets=text.offsets[0],
            speech_frames=speech.frames[0],
            speech_mask=speech.mask[0],
            frame_times=speech.frame_times[0],
            transcript=t.text,
            words=t.words,
        )
        with torch.inference_mode():
            probs = model(collate([example], edge_rule=model.config.edge_rule).to(device)).probs[0]
        return model.config.class_names[int(probs.argmax())]

    first = segment_call(workload.calls[0], settings.segmentation)
    one(first[0])  # warm every model outside the timed part
    t0 = time.perf_counter()
    labels = [one(s) for call in workload.calls[:n] for s in segment_call(call, settings.segmentation)]
    wall = time.perf_counter() - t0
    audio_s = workload.audio_seconds(n)
    log.info(
        "chain ceiling (%d threads): %d utterances of %d calls in %.1f s -> %.2fx realtime",
        threads,
        len(labels),
        n,
        wall,
        audio_s / wall,
    )
    return {
        "threads": threads,
        "calls": n,
        "audio_s": round(audio_s, 2),
        "utterances": len(labels),
        "wall_s": round(wall, 2),
        "throughput_x": round(audio_s / wall, 3),
    }
