"""``emotion data``: turn a public emotion corpus into a manifest (:mod:`training.data.corpora`).

``emotion data speak MANIFEST --out FOLDER`` speaks a text corpus's lines flat
(:mod:`training.data.spoken`) for the words-only slice.

``emotion data prepare NAME SRC --out FILE`` reads the corpus folder ``SRC`` as published, maps its
labels onto the seven common classes, writes the JSON-lines manifest (audio paths absolute, so the
corpus is referenced where it lies, never copied; ``"audio": null`` for text-only corpora) and
prints a per-split, per-label count table; what was dropped, and why, is logged. ``emotion data
mix --out FILE A B ...`` joins manifests into one training corpus (each optionally capped, per
split, with ``--take NAME=N``). ``emotion data list`` shows the registered corpora.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from shared.settings import EMOTIONS, Settings
from training.data.corpora import CORPORA
from training.data.manifest import SPLITS, Example, ManifestError, read_manifest, write_manifest

__all__ = ["add_arguments", "count_table", "main", "mix_manifests"]

log = logging.getLogger(__name__)

_UNSPLIT = "(none)"

_PREPARE_HELP = (
    """\
Read the corpus folder SRC in its published layout and write a manifest (JSON lines, one
utterance per line) with labels mapped onto the seven common classes (anger, sadness, neutral,
happiness, fear, disgust, surprise). Audio paths are written absolute: the corpus stays where it
is. Text corpora (meld, dailydialog, goemotions) give text-only lines ("audio": null): they
train the text side beside spoken utterances (no speech for them); `emotion data mix` joins
corpora into one manifest. Official splits are kept (dev -> val); the
speech corpora have none, and `emotion train` then assigns a speaker-independent split.
What each loader drops is logged with the reason:
  ravdess      calm clips (no common class) unless --calm neutral; song clips
  goemotions   rows whose labels map to several classes (e.g. joy + neutral)
  dailydialog  repeated dialogues (within a split, or already in train / validation)
  all          files or rows that do not follow the corpus's naming or format (listed)
Corpora: """
    + ", ".join(CORPORA)
    + " (`emotion data list` describes them)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands of ``emotion data``: ``prepare`` and ``list``."""
    parser.description = (
        "`emotion data prepare NAME SRC --out manifest.jsonl` reads a corpus folder in its published layout, "
        "maps its labels onto the seven common classes (logging what is dropped and why) and writes a "
        'manifest that `emotion train` / `emotion eval` read; text corpora give text-only lines ("audio": '
        "null). `emotion data list` shows the corpora."
    )
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prepare = sub.add_parser(
        "prepare",
        help="convert a corpus folder into a manifest",
        description=_PREPARE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("name", choices=list(CORPORA), metavar="NAME", help=f"the corpus: {', '.join(CORPORA)}")
    prepare.add_argument(
        "src",
        type=Path,
        metavar="SRC",
        help="the corpus folder as published (e.g. the folder holding Actor_01 ... for ravdess)",
    )
    prepare.add_argument("--out", type=Path, required=True, metavar="FILE", help="manifest to write (JSON lines)")
    prepare.add_argument(
        "--limit", type=int, metavar="N", help="keep only the first N utterances in corpus order (a quick look)"
    )
    prepare.add_argument(
        "--calm",
        choices=("drop", "neutral"),
        help="ravdess only: drop the calm clips (default; calm has no common class) or "
        "label them neutral (more neutral data, in a distinct acted style)",
    )
    mix = sub.add_parser(
        "mix",
        help="join manifests into one training corpus",
        description="Join manifests (e.g. the outputs of `prepare` and the synthetic corpus) into one manifest "
        "for `emotion train --manifest`. Audio paths are written absolute unless they lie under the output's "
        "folder; ids must be unique across the inputs. --take caps an input, keeping its split proportions "
        "(a seeded random sample within each split, whole dialogues or calls where the lines have a call id).",
    )
    mix.add_argument("manifests", type=Path, nargs="+", metavar="MANIFEST", help="manifests to join")
    mix.add_argument("--out", type=Path, required=True, metavar="FILE", help="manifest to write (JSON lines)")
    mix.add_argument(
        "--take",
        action="append",
        default=[],
        metavar="NAME=N",
        help="keep at most N utterances of the input whose file stem is NAME (repeatable)",
    )
    mix.add_argument("--seed", type=int, default=0, help="seed of the --take samples (default 0)")
    speak = sub.add_parser(
        "speak",
        help="speak a text corpus's lines flat (espeak-ng), for the words-only slice",
        description="Speak the text-only lines of MANIFEST with espeak-ng in a flat voice (default pitch, one "
        "rate, no emotional prosody; one voice per speaker), so that a model can be evaluated on the words "
        "alone through the audio path it serves (Whisper's transcript): `emotion eval --manifest "
        "OUT/manifest.jsonl --channel g711`, or trained on. Writes OUT/wav/<id>-flat.wav (16 kHz, -26 dBFS) and "
        "OUT/manifest.jsonl: the same lines with their audio under the ids <id>-flat (extra.cue = text, "
        "extra.text_id = <id>), so `emotion data mix` can join them with the text lines they come from. A rerun "
        "speaks only what is missing.",
    )
    speak.add_argument("manifest", type=Path, metavar="MANIFEST", help="a text corpus's manifest (`prepare` output)")
    speak.add_argument("--out", type=Path, required=True, metavar="FOLDER", help="folder for wav/ and manifest.jsonl")
    speak.add_argument("--split", choices=SPLITS, help="only the lines of this split (default: every line)")
    speak.add_argument("--take", type=int, metavar="N", help="a seeded random sample of N lines (default: all)")
    speak.add_argument("--seed", type=int, default=0, help="seed of the --take sample (default 0)")
    speak.add_argument("--workers", type=int, default=2, help="espeak-ng processes side by side (default 2)")
    sub.add_parser("list", help="the corpora `prepare` reads", description="List the registered corpora.")


def mix_manifests(manifests: Sequence[Path], take: dict[str, int] | None = None, seed: int = 0) -> list[Example]:
    """The examples of ``manifests``, in order; ``take[stem]`` caps the manifest with that file stem
    (each split scaled alike, whole calls kept together where lines carry a ``call_id``)."""
    take = dict(take or {})
    unknown = set(take) - {Path(m).stem for m in manifests}
    if unknown:
        raise ManifestError(f"--take names no input: {', '.join(sorted(unknown))} (use a manifest's file stem)")
    mixed: list[Example] = []
    seen: dict[str, Path] = {}
    for manifest in manifests:
        examples = read_manifest(manifest)
        cap = take.get(Path(manifest).stem)
        if cap is not None and len(examples) > cap:
            examples = _sample(examples, cap, seed)
            log.info("%s: took %d utterances (--take)", manifest, len(examples))
        clashes = [ex.id for ex in examples if ex.id in seen]
        if clashes:
            raise ManifestError(f"{manifest}: {len(clashes)} id(s) already in {seen[clashes[0]]}, e.g. {clashes[0]!r}")
        seen.update((ex.id, Path(manifest)) for ex in examples)
        mixed += examples
    return mixed


def _sample(examples: list[Example], cap: int, seed: int) -> list[Example]:
    """At most about ``cap`` of ``examples``: each split scaled by the same factor, drawing whole
    calls (or single utterances without a call id) at random while they fit."""
    rng = random.Random(seed)
    groups: dict[tuple[str | None, str], list[Example]] = defaultdict(list)
    for ex in examples:
        groups[(ex.split, ex.call_id or f"utt:{ex.id}")].append(ex)
    kept: set[tuple[str | None, str]] = set()
    for split in sorted({s for s, _ in groups}, key=str):
        keys = sorted((k for k in groups if k[0] == split), key=str)
        rng.shuffle(keys)
        budget = cap * sum(len(groups[k]) for k in keys) / len(examples)
        n = 0
        for k in keys:  # whole calls while they fit the split's share (at least one per split)
            if n and n + len(groups[k]) > budget:
                continue
            kept.add(k)
            n += len(groups[k])
    return [ex for ex in examples if (ex.split, ex.call_id or f"utt:{ex.id}") in kept]


def count_table(examples: Sequence[Example]) -> str:
    """Utterances per label (rows) and split (columns), with totals."""
    counts = Counter((ex.label, ex.split or _UNSPLIT) for ex in examples)
    present = {split for _, split in counts}
    columns = [s for s in (*SPLITS, _UNSPLIT) if s in present]
    found = {label for label, _ in counts}
    labels = [lab for lab in EMOTIONS if lab in found] + sorted(found - set(EMOTIONS))
    width = max([len("label"), len("total"), *map(len, labels)])
    head = f"{'label':<{width}}" + "".join(f"{c:>9}" for c in (*columns, "total"))
    lines = [head, "-" * len(head)]
    for lab in [*labels, "total"]:
        row = [sum(n for (k, s), n in counts.items() if s == c and lab in ("total", k)) for c in columns]
        lines.append(f"{lab:<{width}}" + "".join(f"{n:>9,}" for n in (*row, sum(row))))
    return "\n".join(lines)


def _speak(args: argparse.Namespace) -> int:
    from training.data.espeak import EspeakError
    from training.data.spoken import speak_flat

    if args.take is not None and args.take < 1:
        print("--take must be at least 1", file=sys.stderr)
        return 2
    try:
        examples = read_manifest(args.manifest)
        spoken = speak_flat(
            examples, args.out, split=args.split, take=args.take, seed=args.seed, workers=max(1, args.workers)
        )
    except (ManifestError, EspeakError) as e:
        print(str(e), file=sys.stderr)
        return 1
    if not spoken:
        print(f"{args.manifest}: no text-only lines to speak" + (f" in split {args.split}" if args.split else ""))
        return 1
    out = write_manifest(args.out / "manifest.jsonl", spoken)
    print(f"spoke {len(spoken):,} of {len(examples):,} lines flat -> {out}")
    print(count_table(spoken))
    return 0


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``emotion data``: 0 on success, 1 when the corpus cannot be read, 2 for a wrong option."""
    if args.data_command == "list":
        width = max(map(len, CORPORA))
        for corpus in CORPORA.values():
            print(f"{corpus.name:<{width}}  {corpus.kind:<6}  {corpus.description}")
        return 0
    if args.data_command == "speak":
        return _speak(args)
    if args.data_command == "mix":
        try:
            take = {name: int(n) for name, _, n in (item.partition("=") for item in args.take)}
        except ValueError:
            print(f"--take wants NAME=N, got {args.take}", file=sys.stderr)
            return 2
        try:
            examples = mix_manifests(args.manifests, take, args.seed)
        except ManifestError as e:
            print(str(e), file=sys.stderr)
            return 1
        out = write_manifest(args.out, examples)
        print(f"mixed {len(args.manifests)} manifests: {len(examples):,} utterances -> {out}")
        print(count_table(examples))
        return 0
    corpus = CORPORA[args.name]
    options = {}
    if args.calm is not None:
        if "calm" not in corpus.options:
            print(f"--calm applies to ravdess only, not {corpus.name}", file=sys.stderr)
            return 2
        options["calm"] = args.calm
    if args.limit is not None and args.limit < 1:
        print("--limit must be at least 1", file=sys.stderr)
        return 2
    try:
        examples = corpus.load(args.src, **options)
    except ManifestError as e:
        print(f"{corpus.name}: {e}", file=sys.stderr)
        return 1
    if args.limit is not None and len(examples) > args.limit:
        log.info("%s: kept the first %d of %d utterances (--limit)", corpus.name, args.limit, len(examples))
        examples = examples[: args.limit]
    out = write_manifest(args.out, examples)
    kind = "text-only" if corpus.kind == "text" else "speech"
    print(f"{corpus.name}: {len(examples):,} {kind} utterances -> {out}")
    print(count_table(examples))
    return 0
