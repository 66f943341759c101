"""CLI subcommands that make data from runs.

``generate`` (sample candidates), ``revise`` (critique → revision) and ``agreement`` (judge vs human
labels).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the subcommands on the main parser's subparsers."""
    _add_generate(sub)
    _add_revise(sub)
    _add_agreement(sub)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="sample n candidate responses per case from a generator model"
    )
    p.add_argument("suite", help="suite file or built-in name")
    p.add_argument(
        "--generator",
        "-g",
        required=True,
        help="model config (a judge YAML: openai or transformers)",
    )
    p.add_argument("--n", type=int, default=4, help="samples per case (default 4)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--output", "-o", type=Path, required=True, help="candidates JSONL to write")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    """Sample candidates and say how many were written where."""
    from harness.engine.sample import SampleOptions, sample

    out = sample(
        SampleOptions(
            suite=args.suite,
            generator=args.generator,
            output=args.output,
            n=args.n,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            use_cache=not args.no_cache,
            quiet=args.quiet,
        )
    )
    rows = sum(1 for line in out.read_text(encoding="utf-8").splitlines() if line.strip())
    print(f"{rows} candidates written to {out}; point a suite's candidates_file at it")
    return 0


def _add_revise(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "revise", help="critique responses against principles and revise them (constitutional)"
    )
    p.add_argument("run", type=Path, help="a run folder")
    p.add_argument(
        "--critic", required=True, help="judge config that writes critiques (and re-judges)"
    )
    p.add_argument("--reviser", help="model config that rewrites (default: the critic)")
    p.add_argument(
        "--principle",
        "-p",
        action="append",
        default=[],
        help="principle to revise for (repeatable)",
    )
    p.add_argument(
        "--all", action="store_true", help="revise every candidate, not only those that failed"
    )
    p.add_argument(
        "--confirm", action="store_true", help="re-judge revised vs original, both orders"
    )
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_revise)


def cmd_revise(args: argparse.Namespace) -> int:
    """Critique and revise, then count the revised (and confirmed) targets."""
    import json

    from harness.engine.revise import ReviseOptions, revise

    path = revise(
        ReviseOptions(
            run_dir=args.run,
            critic=args.critic,
            reviser=args.reviser,
            principles=args.principle,
            only_failing=not args.all,
            confirm=args.confirm,
            use_cache=not args.no_cache,
            quiet=args.quiet,
        )
    )
    rows = [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    ok = sum(r["status"] == "ok" for r in rows)
    confirmed = sum(r["confirmed"] is True for r in rows)
    print(
        f"{len(rows)} targets, {ok} revised"
        + (f", {confirmed} confirmed better" if args.confirm else "")
    )
    print(f"revisions: {path}")
    return 0


def _add_agreement(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agreement",
        help="judge agreement with the suite's human labels (four protocols) and human ratings",
    )
    p.add_argument("run", type=Path, help="a run folder")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the coin that fixes the label frame"
    )
    p.add_argument(
        "--by-tag", action="store_true", help="one block per case tag (e.g. per data source)"
    )
    p.set_defaults(func=cmd_agreement)


def cmd_agreement(args: argparse.Namespace) -> int:
    """Print the judges' agreement with the human labels and ratings (per tag with ``--by-tag``)."""
    from harness.analysis import agreement as ag
    from harness.rundir import read_run

    run = read_run(args.run)
    labels = (ag.human_agreement_by_tag if args.by_tag else ag.human_agreement)(run, seed=args.seed)
    ratings = (ag.human_rating_agreement_by_tag if args.by_tag else ag.human_rating_agreement)(
        run, seed=args.seed
    )
    if labels.empty and ratings.empty:
        print("no human-labelled pairs or human-rated candidates with judge verdicts in this run")
        return 0
    for title, table in (("human preference labels", labels), ("human ratings", ratings)):
        if not table.empty:
            print(f"agreement with {title}:")
            print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}") + "\n")
    return 0
