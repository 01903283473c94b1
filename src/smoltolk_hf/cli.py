"""The `smoltolk` command: one subcommand per job; each one's work lives in its own module."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(cache_dir=args.cache_dir, max_new_tokens=args.max_new_tokens)
    if result["max_text_logit_diff"] > 1e-4:
        print("ERROR: SmolTolk's text logits differ from the backbone's", file=sys.stderr)
        return 1
    return 0


def _backbone(args: argparse.Namespace) -> int:
    from .backbones import cli_backbone

    return cli_backbone(args.cache_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smoltolk", description="SmolTolk text-speech language models.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the package end to end on the embedded SmolLM2-135M backbone")
    demo.add_argument("--cache-dir", default=None, help="where the converted backbone is cached")
    demo.add_argument("--max-new-tokens", type=int, default=16)
    demo.set_defaults(func=_demo)

    backbone = commands.add_parser("backbone", help="convert (once) and locate the embedded SmolLM2-135M backbone")
    backbone.add_argument("--cache-dir", default=None)
    backbone.set_defaults(func=_backbone)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
