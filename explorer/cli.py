"""The `explorer` command: train a preset, sample from a checkpoint, benchmark.

    explorer train --preset reverse-tiny --steps 300 --out runs/
    explorer sample runs/reverse-tiny-... --prompt "ROMEO:" --tokens 200    # or .../checkpoint.safetensors
    explorer bench --configs tiny,small
    explorer demo --preset repeat-tiny
"""
import argparse
import sys


def _threads(text):
    if text in ("auto", "all"):
        return None if text == "all" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, "all" or "auto", got {text!r}') from None


def _train(args):
    from .runs import train_preset
    train_preset(args.preset, steps=args.steps, out=args.out, seed=args.seed,
                 sample_every=args.sample_every, progress=not args.quiet, threads=args.threads)
    return 0


def _sample(args):
    from .runs import sample_checkpoint
    print(sample_checkpoint(args.checkpoint, prompt=args.prompt, tokens=args.tokens,
                            temperature=args.temperature, top_k=args.top_k, seed=args.seed))
    return 0


def _presets(args):
    from .presets import PRESETS
    for name, preset in PRESETS.items():
        print(f"{name:20s} {preset.description}")
    return 0


def _demo(args):
    from .demo import serve_demo
    return serve_demo(args.preset, port=args.port, open_browser=not args.no_browser, lab=args.lab)


def _bench(argv):
    from .bench import main_bench
    return main_bench(argv)


def build_parser():
    parser = argparse.ArgumentParser(prog="explorer", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model from a preset; writes a run folder")
    train.add_argument("--preset", default="reverse-tiny", help="preset name (see `explorer presets`)")
    train.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    train.add_argument("--out", default="runs", help="folder in which the run folder is created")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--sample-every", type=int, default=None,
                       help="print a generated sample every N steps (default: the preset's)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--threads", type=_threads, default="auto",
                       help='threads for the kernels: a number, "all", or "auto" (the default: '
                            'chosen by timing steps, as other programs may be using cores)')
    train.set_defaults(run=_train)

    sample = sub.add_parser("sample", help="generate text from a checkpoint")
    sample.add_argument("checkpoint", help="a run folder written by `explorer train`, or its "
                                            "checkpoint.safetensors")
    sample.add_argument("--prompt", default="", help="text to continue")
    sample.add_argument("--tokens", type=int, default=200, help="how many tokens to generate")
    sample.add_argument("--temperature", type=float, default=0.8)
    sample.add_argument("--top-k", type=int, default=None)
    sample.add_argument("--seed", type=int, default=None)
    sample.set_defaults(run=_sample)

    presets = sub.add_parser("presets", help="list the training presets")
    presets.set_defaults(run=_presets)

    demo = sub.add_parser("demo", help="serve the instructor's live demo (Voila) in the browser")
    demo.add_argument("--preset", default="reverse-tiny", help="what the model learns (see `explorer presets`)")
    demo.add_argument("--port", type=int, default=8866)
    demo.add_argument("--no-browser", action="store_true", help="don't open a browser window")
    demo.add_argument("--lab", action="store_true", help="open it in JupyterLab instead of Voila")
    demo.set_defaults(run=_demo)

    sub.add_parser("bench", help="benchmark a training step against PyTorch (see --help)",
                   add_help=False)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"explorer {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
