"""The ``hf-datamix`` command: one entry point with subcommands.

    hf-datamix strategies             list the registered strategies
    hf-datamix corpus build OUT_DIR   build the large real-text corpus from Debian/Python packages
    hf-datamix corpus info            the embedded corpus
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _strategies(_args: argparse.Namespace) -> int:
    from .strategies.registry import REGISTRY

    names = REGISTRY.names()
    width = max(len(n) for n in names) if names else 0
    for name in names:
        try:
            description = REGISTRY.get(name).description
        except Exception as error:  # a broken plugin is listed, not fatal
            description = f"(failed to load: {error})"
        print(f"{name:<{width}}  {description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-datamix",
        description="Data mixing for Hugging Face training: strategies, corpora, offline fits, reports.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  hf-datamix strategies\n  hf-datamix corpus build /data/corpus --min-total-mb 200",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    strategies = sub.add_parser(
        "strategies",
        help="list registered strategies with one-line descriptions",
        description="List the strategies found through the 'hf_datamix.strategies' entry points.",
        epilog="example:\n  hf-datamix strategies",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    strategies.set_defaults(func=_strategies)
    corpus = sub.add_parser(
        "corpus",
        help="build or describe text corpora (run 'hf-datamix corpus --help')",
        add_help=False,
    )
    corpus.set_defaults(func=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "corpus":
        from .data.corpus_build import main as corpus_main

        return corpus_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
