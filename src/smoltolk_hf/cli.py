"""The `smoltolk` command: one subcommand per job; each one's work lives in its own module."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo

    result = run_demo(
        cache_dir=args.cache_dir, max_new_tokens=args.max_new_tokens, train=not args.no_train, work_dir=args.work_dir
    )
    if result["max_text_logit_diff"] > 1e-4:
        print("ERROR: SmolTolk's text logits differ from the backbone's", file=sys.stderr)
        return 1
    return 0


def _backbone(args: argparse.Namespace) -> int:
    from .backbones import cli_backbone

    return cli_backbone(args.cache_dir)


def _synth_corpus(args: argparse.Namespace) -> int:
    from .demo.corpus import synthesize_corpus

    print(synthesize_corpus(args.out_dir, args.n, seed=args.seed))
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    from .data.prepare import tokenize_audio_dataset

    tokenize_audio_dataset(
        args.source, args.out_dir, args.speech_tokenizer,
        shard_size=args.shard_size, num_proc=args.num_proc, batch_size=args.batch_size,
    )
    return 0


def _train_speech_tokenizer(args: argparse.Namespace) -> int:
    from .data.prepare import read_audio_source
    from .tokenization_speech import HubertFrontEnd, MfccFrontEnd, SpeechTokenizer

    if args.hubert:
        from transformers import HubertModel

        front_end = HubertFrontEnd(HubertModel.from_pretrained(args.hubert), args.layer)
    else:
        front_end = MfccFrontEnd()
    audio = [row["audio"] for row in read_audio_source(args.source)]
    SpeechTokenizer.train(audio, args.n_units, front_end, max_frames=args.max_frames).save_pretrained(args.out_dir)
    return 0


def _convert_authors(argv: list[str]) -> int:
    from .conversion import cli_convert_authors

    return cli_convert_authors(argv)


def _eval(argv: list[str]) -> int:
    from .evaluation.cli import cli_eval

    return cli_eval(argv)


def _train(argv: list[str]) -> int:
    from .training.train import cli_train

    return cli_train(argv)


def _export(argv: list[str]) -> int:
    from .hub import cli_export

    return cli_export(argv)


# Subcommands with a parser of their own: everything after the name is theirs (including --help).
PASS_THROUGH = {
    "convert-authors": (_convert_authors, "convert a checkpoint released by the paper's authors (.pt)"),
    "train": (_train, "two-stage training from a YAML config (HF Trainer; torchrun / accelerate launch)"),
    "export": (_export, "write a Hub-ready folder: weights, processor, remote code, model card"),
    "eval": (_eval, "paper evaluation (Table 1 layout): sBLIMP, StoryCloze in 4 settings, MMLU, NLL, segmentation"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smoltolk", description="SmolTolk text-speech language models.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in PASS_THROUGH.items():
        commands.add_parser(name, help=f"{help_text} (see `smoltolk {name} --help`)", add_help=False)

    demo = commands.add_parser("demo", help="run the package end to end on the embedded SmolLM2-135M backbone")
    demo.add_argument("--cache-dir", default=None, help="where the converted backbone is cached")
    demo.add_argument("--max-new-tokens", type=int, default=16)
    demo.add_argument("--work-dir", default="outputs/demo", help="corpus, checkpoints and plots go here")
    demo.add_argument("--no-train", action="store_true", help="stop after building and generating (about a minute)")
    demo.set_defaults(func=_demo)

    backbone = commands.add_parser("backbone", help="convert (once) and locate the embedded SmolLM2-135M backbone")
    backbone.add_argument("--cache-dir", default=None)
    backbone.set_defaults(func=_backbone)

    synth = commands.add_parser("synth-corpus", help="synthesise a tiny word-aligned spoken corpus with espeak-ng")
    synth.add_argument("out_dir")
    synth.add_argument("--n", type=int, default=100, help="number of utterances")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_synth_corpus)

    tokenize = commands.add_parser("tokenize", help="audio folder or manifest -> units dataset (datasets format)")
    tokenize.add_argument("source", help="folder of audio files or a JSONL/CSV manifest")
    tokenize.add_argument("out_dir")
    tokenize.add_argument("--speech-tokenizer", required=True, help="SpeechTokenizer folder or Hub id")
    tokenize.add_argument("--shard-size", type=int, default=256)
    tokenize.add_argument("--num-proc", type=int, default=1)
    tokenize.add_argument("--batch-size", type=int, default=8)
    tokenize.set_defaults(func=_tokenize)

    codebook = commands.add_parser("train-speech-tokenizer", help="fit a k-means codebook on audio features")
    codebook.add_argument("source", help="folder of audio files or a JSONL/CSV manifest")
    codebook.add_argument("out_dir")
    codebook.add_argument("--n-units", type=int, default=500)
    codebook.add_argument("--hubert", default=None, help="HubertModel folder or Hub id (default: MFCC stand-in)")
    codebook.add_argument("--layer", type=int, default=11)
    codebook.add_argument("--max-frames", type=int, default=None)
    codebook.set_defaults(func=_train_speech_tokenizer)
    return parser


# What a user's input causes (a bad value; a missing, existing or unreadable path; a Hub id that cannot be found):
# one `error: ...` line and exit status 2, as argparse does for bad arguments, never a traceback.
USER_ERRORS = (ValueError, OSError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] in PASS_THROUGH:
            return PASS_THROUGH[argv[0]][0](argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except USER_ERRORS as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)  # one line, however the message is wrapped
        return 2


if __name__ == "__main__":
    sys.exit(main())
