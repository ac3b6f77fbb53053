"""``emotion data``: turn a public emotion corpus into a manifest (:mod:`training.data.corpora`).

``emotion data prepare NAME SRC --out FILE`` reads the corpus folder ``SRC`` as published, maps its
labels onto the seven common classes, writes the JSON-lines manifest (audio paths absolute, so the
corpus is referenced where it lies, never copied; ``"audio": null`` for text-only corpora) and
prints a per-split, per-label count table; what was dropped, and why, is logged. ``emotion data
list`` shows the registered corpora.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from shared.settings import EMOTIONS, Settings
from training.data.corpora import CORPORA
from training.data.manifest import SPLITS, Example, ManifestError, write_manifest

__all__ = ["add_arguments", "count_table", "main"]

log = logging.getLogger(__name__)

_UNSPLIT = "(none)"

_PREPARE_HELP = """\
Read the corpus folder SRC in its published layout and write a manifest (JSON lines, one
utterance per line) with labels mapped onto the seven common classes (anger, sadness, neutral,
happiness, fear, disgust, surprise). Audio paths are written absolute: the corpus stays where it
is. Text corpora (meld, dailydialog, goemotions) give text-only lines ("audio": null);
`emotion train` / `eval` need audio for every model and refuse them, so train on a speech
corpus (ravdess, crema-d, tess). Official splits are kept (dev -> val); the
speech corpora have none, and `emotion train` then assigns a speaker-independent split.
What each loader drops is logged with the reason:
  ravdess      calm clips (no common class) unless --calm neutral; song clips
  goemotions   rows whose labels map to several classes (e.g. joy + neutral)
  dailydialog  repeated dialogues (within a split, or already in train / validation)
  all          files or rows that do not follow the corpus's naming or format (listed)
Corpora: """ + ", ".join(CORPORA) + " (`emotion data list` describes them)."


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Sub-commands of ``emotion data``: ``prepare`` and ``list``."""
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prepare = sub.add_parser(
        "prepare", help="convert a corpus folder into a manifest", description=_PREPARE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    prepare.add_argument("name", choices=list(CORPORA), metavar="NAME", help=f"the corpus: {', '.join(CORPORA)}")
    prepare.add_argument("src", type=Path, metavar="SRC",
                         help="the corpus folder as published (e.g. the folder holding Actor_01 ... for ravdess)")
    prepare.add_argument("--out", type=Path, required=True, metavar="FILE", help="manifest to write (JSON lines)")
    prepare.add_argument("--limit", type=int, metavar="N",
                         help="keep only the first N utterances in corpus order (a quick look)")
    prepare.add_argument("--calm", choices=("drop", "neutral"),
                         help="ravdess only: drop the calm clips (default; calm has no common class) or "
                         "label them neutral (more neutral data, in a distinct acted style)")
    sub.add_parser("list", help="the corpora `prepare` reads", description="List the registered corpora.")
    return parser


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


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``emotion data``: 0 on success, 1 when the corpus cannot be read, 2 for a wrong option."""
    if args.data_command == "list":
        width = max(map(len, CORPORA))
        for corpus in CORPORA.values():
            print(f"{corpus.name:<{width}}  {corpus.kind:<6}  {corpus.description}")
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
