"""``harness export preferences RUN --output DIR``: the CLI side of :mod:`harness.outputs.export`.

Bad input raises ConfigError or RunError,
which the CLI prints as one line (exit 2); an export that kept no pair is written but exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` (with its ``preferences`` subcommand) to the ``harness`` subcommands."""
    export = sub.add_parser("export", help="export a run's judgments as datasets")
    kinds = export.add_subparsers(dest="export_kind", required=True)
    p = kinds.add_parser(
        "preferences",
        help="preference pairs for DPO / reward models (TRL formats, JSONL and Parquet)",
        description="Build prompt/chosen/rejected pairs from a run folder, filtered by explicit policies; write "
        "TRL standard and conversational files, a candidates table and a dataset card into DIR (replaced whole).",
    )
    p.add_argument("run", type=Path, help="run folder (reports/<run-id>)")
    p.add_argument(
        "--output", "-o", type=Path, required=True, metavar="DIR", help="folder to write (replaced)"
    )
    p.add_argument(
        "--format",
        action="append",
        metavar="NAME",
        help="standard.jsonl, standard.parquet, conversational.jsonl, conversational.parquet, or "
        "standard / conversational / jsonl / parquet for two each; repeatable (default: all four)",
    )
    p.add_argument(
        "--principle",
        default="overall",
        metavar="ID|overall",
        help="label that decides chosen/rejected (default: overall, weighted by principle weights)",
    )
    p.add_argument(
        "--judge", metavar="ID", help="judge whose labels to use (required when several judged)"
    )
    p.add_argument(
        "--source",
        choices=["auto", "pairwise", "pointwise"],
        default="auto",
        help="judgments to build pairs from (default: pairwise when the judge has them)",
    )
    p.add_argument(
        "--ties", choices=["drop", "keep"], default="drop", help="ties: |p - 0.5| <= --tie-band"
    )
    p.add_argument(
        "--tie-band",
        type=float,
        default=0.0,
        metavar="B",
        help="tie half-width (default 0: exactly 0.5)",
    )
    p.add_argument(
        "--min-margin", type=float, default=0.0, metavar="M", help="drop pairs with |2p - 1| < M"
    )
    p.add_argument(
        "--inconsistent",
        choices=["drop", "keep"],
        default="drop",
        help="pairs whose verdict flipped with the order shown",
    )
    p.add_argument(
        "--unscored",
        choices=["drop", "skip-principle"],
        default="drop",
        help="pairs with an unscored/error verdict: drop them, or label over the scored principles",
    )
    p.add_argument("--no-revisions", action="store_true", help="leave critique-revision pairs out")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_export_preferences)


def cmd_export_preferences(args: argparse.Namespace) -> int:
    """Run the export and print its counts."""
    from harness.outputs.export import counts_text, export_preferences
    from harness.outputs.preferences import ExportOptions

    options = ExportOptions(
        ties=args.ties,
        tie_band=args.tie_band,
        min_margin=args.min_margin,
        inconsistent=args.inconsistent,
        unscored=args.unscored,
        principle=args.principle,
        judge=args.judge,
        source=args.source,
        revisions=not args.no_revisions,
    )
    result = export_preferences(args.run, args.output, options, args.format, quiet=args.quiet)
    print(counts_text(result.summary))
    print(f"wrote {result.out_dir} (dataset card: {result.out_dir / 'README.md'})")
    if result.summary["counts"]["kept"] == 0:
        # written all the same (the card says what dropped them), but a trainer cannot use an empty
        # split
        print(
            "warning: no pair survived the policies (datasets cannot load an empty split); loosen them",
            file=sys.stderr,
        )
        return 1
    return 0
