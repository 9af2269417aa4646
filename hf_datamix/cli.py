"""The ``hf-datamix`` command: one entry point with subcommands.

hf-datamix strategies             list the registered strategies (also: simulators, laws)
hf-datamix corpus build OUT_DIR   build the large real-text corpus from Debian/Python packages
hf-datamix corpus info            the embedded corpus
hf-datamix fit --ratios R.csv --metrics M.csv --out MIX.json
                                  fit a mixing law on swarm results and propose a mixture
hf-datamix push OUTPUT_DIR REPO_ID  push a run's mixtures, compute, plots, adapters and card to the Hub
hf-datamix report OUTPUT_DIR [...]  report.md for one run, a comparison for several
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _registry(kind: str):
    if kind == "strategies":
        from .strategies.registry import STRATEGIES as registry
    elif kind == "simulators":
        from .simulate.base import SIMULATORS as registry
    else:
        from .laws import LAWS as registry
    return registry


def _list(args: argparse.Namespace) -> int:
    registry = _registry(args.command)
    names = registry.names()
    width = max(len(n) for n in names) if names else 0
    for name in names:
        try:
            cls = registry.get(name)
            description = getattr(cls, "description", "") or (cls.__doc__ or "").strip().splitlines()[0]
        except Exception as error:  # a broken plugin is listed, not fatal
            description = f"(failed to load: {error})"
        print(f"{name:<{width}}  {description}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from .fit import run_fit_command  # imported here: it pulls in torch and cvxpy

    try:
        result = run_fit_command(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, RuntimeError) as error:
        # Input problems are the user's to fix: one clear line, no traceback.
        print(f"hf-datamix fit: error: {error}", file=sys.stderr)
        return 2
    fit = result["fit"]
    print(f"wrote {args.out}")
    print("weights:   " + ", ".join(f"{k}={v:.4f}" for k, v in result["weights"].items()))
    print("predicted: " + ", ".join(f"{k}={v:.4g}" for k, v in result["predicted"].items()))
    spearman = fit.get("spearman_mean")
    print(
        f"law {fit['law']} on {fit['runs']} runs: held-out Spearman ({fit.get('cv')}) "
        f"{'n/a' if spearman is None else f'{spearman:.3f}'}; proposal {result['proposal']['status']}"
    )
    return 0


_FIT_EXAMPLE = """\
example:
  hf-datamix fit --ratios swarm/ratios.csv --metrics swarm/metrics.csv --out mixture.json \\
      --prior natural.json --tokens tokens.json --target-tokens 2e10 --max-repetition 4

ratios.csv:  run,web,code,books          metrics.csv:  run,web_loss,code_loss
             run0,0.5,0.3,0.2                          run0,3.21,2.05
             run1,0.1,0.6,0.3                          run1,3.40,1.88
The output JSON has "weights" (loadable with hf_datamix.Mixture.load), "predicted",
"fit" (held-out Spearman per target), "law", "proposal" and "settings".
"""


def _add_fit_parser(sub) -> None:
    fit = sub.add_parser(
        "fit",
        help="fit a mixing law on swarm results (CSV) and propose a mixture (Olmix offline)",
        description="Fit a mixing law on swarm runs (each run's mixture and losses) and propose the mixture "
        "minimising the mean predicted loss + KL to the prior, under repetition caps k*N_j/R.",
        epilog=_FIT_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("--ratios", required=True, help="CSV: a 'run' column plus one weight column per domain")
    fit.add_argument(
        "--metrics", required=True, help="CSV: a 'run' column plus one loss column per target (lower is better)"
    )
    fit.add_argument("--out", required=True, help="output JSON (a directory gets mixture.json)")
    fit.add_argument("--prior", help="JSON {domain: weight} naming every domain (default: uniform)")
    fit.add_argument("--kl", type=float, default=0.05, help="weight of KL(mixture || prior) (default 0.05)")
    fit.add_argument("--tokens", help="JSON {domain: available tokens N_j}; with --target-tokens sets caps")
    fit.add_argument("--target-tokens", type=float, help="R, the tokens the target run trains on")
    fit.add_argument("--max-repetition", type=float, default=4.0, help="k, max epochs over a domain (default 4)")
    fit.add_argument(
        "--law",
        default="log_linear",
        help="mixing law: log_linear (default), linear, gaussian_process (needs scikit-learn), or one "
        "another package registers under the entry-point group hf_datamix.laws",
    )
    fit.add_argument("--law-options", help="JSON object of law settings, e.g. '{\"starts\": 100}'")
    fit.add_argument("--target-weights", help="JSON {target: weight}; targets not named weigh 1")
    fit.add_argument("--folds", type=int, default=5, help="cross-validation folds for the fit report (default 5)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the fit and any random search (default 0)")
    fit.set_defaults(func=_fit)


def _push(args: argparse.Namespace) -> int:
    from .card import push_run
    from .hub import HubError

    try:
        info = push_run(
            args.output_dir,
            args.repo_id,
            token=args.token,
            private=args.private or None,
            include_probe_adapters=not args.no_adapters,
        )
    except (HubError, FileNotFoundError, ValueError) as error:
        print(f"hf-datamix push: error: {error}", file=sys.stderr)
        return 2
    print(f"pushed {args.output_dir} to {getattr(info, 'commit_url', None) or args.repo_id}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import compare_runs, write_report

    try:
        if len(args.output_dirs) == 1 and args.out is None:
            written = write_report(args.output_dirs[0])
        else:
            written = compare_runs(args.output_dirs, args.out)
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"hf-datamix report: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {written['markdown']}")
    return 0


def _add_push_and_report_parsers(sub) -> None:
    push = sub.add_parser(
        "push",
        help="push a run's mixing artefacts and model card to a Hub repo in one commit",
        description="Upload mixtures.json, compute.json, the final mixture (mixture.json), results.json, the plots, "
        "probe_adapters/ and a model card from OUTPUT_DIR to REPO_ID in one commit. OUTPUT_DIR is only read.",
        epilog="example:\n  hf-datamix push outputs/midtrain me/midtrain-mixture --private\n"
        "then: Mixture.from_pretrained('me/midtrain-mixture') or --init_mixture me/midtrain-mixture",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("output_dir", help="the run's output_dir (holds mixtures.json)")
    push.add_argument("repo_id", help="Hub repo id, e.g. me/my-mixture (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--no-adapters", action="store_true", help="leave out probe_adapters/")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN or the huggingface-cli login)")
    push.set_defaults(func=_push)
    report = sub.add_parser(
        "report",
        help="write report.md for a run, or compare several runs in one table and figure",
        description="One OUTPUT_DIR: report.md in it (mixture over steps, per-domain eval loss, "
        "law fit, compute by kind). Several: one comparison table and figure in --out.",
        epilog="examples:\n  hf-datamix report outputs/midtrain\n"
        "  hf-datamix report outputs/op_mix outputs/retrain --out outputs/compare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("output_dirs", nargs="+", metavar="OUTPUT_DIR", help="run output folders")
    report.add_argument("--out", help="folder of the comparison (default: FIRST_OUTPUT_DIR/compare)")
    report.set_defaults(func=_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-datamix",
        description="Data mixing for Hugging Face training: strategies, corpora, offline fits, reports.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  hf-datamix strategies\n  hf-datamix corpus build /data/corpus --min-total-mb 200",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for kind in ("strategies", "simulators", "laws"):
        listing = sub.add_parser(
            kind,
            help=f"list registered {kind} with one-line descriptions",
            description=f"List the built-in {kind} and those other packages declare under the entry-point group "
            f"'hf_datamix.{kind}'.",
            epilog=f"example:\n  hf-datamix {kind}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        listing.set_defaults(func=_list)
    corpus = sub.add_parser(
        "corpus",
        help="build or describe text corpora (run 'hf-datamix corpus --help')",
        add_help=False,
    )
    corpus.set_defaults(func=None)
    _add_fit_parser(sub)
    _add_push_and_report_parsers(sub)
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
