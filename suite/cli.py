"""Argument parsing only: each subcommand calls one library function. A UserError becomes one line
on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import sys

from .errors import UserError


def _train(args: argparse.Namespace) -> None:
    from .train import TrainConfig, train

    if args.data_dir and args.synthetic:
        raise UserError("--data-dir and --synthetic exclude each other")
    train(
        TrainConfig(
            method=args.method,
            recipe=args.recipe,
            epochs=args.epochs,
            threads=args.threads,
            seed=args.seed,
            dataset=args.dataset,
            data_dir=args.data_dir,
            synthetic=args.synthetic,
            subset=args.subset,
            batch_size=args.batch_size,
            out=args.out,
            resume=args.resume,
        )
    )


def _add_train(sub) -> None:
    from .methods import METHODS
    from .train import RECIPES

    recipes = "\n".join(f"  {r.name}: {r.summary}" for r in RECIPES.values())
    methods = "\n".join(f"  {m.name}: {m.summary}" for m in METHODS.values())
    p = sub.add_parser(
        "train",
        help="train one method, writing OUT/history.json and OUT/checkpoint.pt after every epoch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Train the paper's VGG4bit with one method.\n\nrecipes:\n{recipes}\n\nmethods:\n{methods}\n\n"
        "--epochs N shortens a recipe without changing its schedule: with the paper recipe the LR follows\n"
        "the same T_max=100 cosine, so a 10-epoch run never reaches the low-LR phase.",
    )
    p.add_argument("--method", default="tathe4", help="a registered method (default tathe4)")
    p.add_argument("--recipe", default="paper", help="training recipe (default paper)")
    p.add_argument("--epochs", type=int, help="number of epochs (default: the recipe's, 150 for paper)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100"])
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py / cifar-100-python (else $Q4BENCH_DATA)")
    p.add_argument("--synthetic", action="store_true", help="train on generated data in the official format")
    p.add_argument("--subset", type=int, help="train on the first N training images (the test set stays whole)")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size (128)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    p.add_argument("--out", required=True, help="run folder")
    p.set_defaults(func=_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="q4bench", description="Does 4-bit training match full precision on this machine, and at what cost?"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as exc:
        print(f"q4bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("q4bench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
