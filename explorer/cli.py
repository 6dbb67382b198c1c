"""The `explorer` command: train a preset, sample from a checkpoint or GPT-2, benchmark.

    explorer train --preset reverse-tiny --steps 300 --out runs/
    explorer sample runs/reverse-tiny-... --prompt "ROMEO:" --tokens 200    # or .../checkpoint.safetensors
    explorer download gpt2                                # into the Hugging Face cache; prints where
    explorer sample --model gpt2 --prompt "Hello, I'm a language model,"
    explorer bench --configs tiny,small
    explorer demo --preset repeat-tiny
    explorer lab                                   # the course's notebooks in ./explorer-course, in JupyterLab
    explorer course nbgrader grading/              # the course as an nbgrader course
    explorer course handout handout/               # the student notebooks, for courses without nbgrader
"""
import argparse
import os
import subprocess
import sys
import time

#: seconds between a rank's last words and MPI_Abort (see _rank_failed)
ABORT_GRACE_S = 0.5


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line, `explorer train: error: ...`, and exit status 2
    (argparse's usage block buries the message; `--help` still shows it)."""
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _threads(text):
    if text in ("auto", "all"):
        return None if text == "all" else "auto"
    try:
        return _at_least(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f'expected a number >= 1, "all" or "auto", '
                                         f'got {text!r}') from None


def _at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _zero_stage(text):
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"expected 0 or 1 (ZeRO stage 1 shards the optimizer "
                                         f"state), got {text!r}")
    return int(text)


def _positive_float(text):
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _train(args):
    from .train.distributed import world
    comm = world()      # under mpiexec every rank runs this same command: one model, N ranks
    try:
        return _train_run(args, comm)
    except BaseException as exc:
        if comm is None:
            raise
        return _rank_failed(exc, comm)


def _train_run(args, comm):
    from .train.distributed import DEFAULT_TIMEOUT_S
    from .train.runs import RunInterrupted, train_preset
    if args.resume is not None:
        given = [flag for flag, value in (("--preset", args.preset), ("--seed", args.seed),
                                          ("--sample-every", args.sample_every),
                                          ("--out", args.out)) if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} cannot be changed on --resume: the run "
                             f"continues with the settings in {args.resume}/config.json")
    try:
        train_preset(args.preset or "reverse-tiny", steps=args.steps, out=args.out or "runs",
                     seed=args.seed or 0, sample_every=args.sample_every, progress=not args.quiet,
                     threads=args.threads, save_every=args.save_every, resume=args.resume,
                     comm=comm, zero=args.zero,
                     rank_timeout=args.rank_timeout or DEFAULT_TIMEOUT_S)
    except RunInterrupted as stop:
        if comm is None or comm.Get_rank() == 0:
            print(f"interrupted at step {stop.step}; resume with: explorer train --resume "
                  f"{stop.folder}", file=sys.stderr)
            print(f"run folder: {stop.folder}")
        return 130
    return 0


def _rank_failed(exc, comm):
    """An error in one rank of a distributed run. One that every rank raised at the same point
    (a RankError with agreed=True): rank 0 says it and every rank exits. Any other: this rank
    says it, then MPI_Abort ends every rank now (the others would wait for it until their
    deadline)."""
    import traceback

    from .train.distributed import RankError
    rank, size = comm.Get_rank(), comm.Get_size()
    agreed = isinstance(exc, RankError) and exc.agreed
    code = (130 if isinstance(exc, KeyboardInterrupt)
            else 2 if isinstance(exc, (ValueError, OSError, KeyError, RankError)) else 1)
    if rank == 0 or not agreed:
        if code == 1:
            traceback.print_exception(exc)
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"explorer train: error on rank {rank} of {size}: {message}", file=sys.stderr,
              flush=True)
    if not agreed:
        # mpiexec forwards our output through a pipe; MPI_Abort ends the job at once, so give
        # the message a moment to get through first (without it, we saw both lost)
        time.sleep(ABORT_GRACE_S)
        comm.Abort(code)
    return code


def _sample(args):
    if (args.checkpoint is None) == (args.model is None):
        args.parser.error("give either a checkpoint (a run folder or its .safetensors file) or "
                          "--model NAME (e.g. --model gpt2)")
    if args.revision is not None and args.model is None:
        args.parser.error("--revision picks a version of a --model from the hub")
    settings = dict(prompt=args.prompt, tokens=args.tokens, temperature=args.temperature,
                    top_k=args.top_k, seed=args.seed)
    if args.model is not None:
        from .io.hub import pretrained
        from .train.runs import sample_text
        model = pretrained(args.model, revision=args.revision)
        if model.tokenizer is None and args.prompt:
            raise ValueError(f"{args.model} has a {model.config.vocab_size}-token vocabulary, not "
                             f"GPT-2's, and explorer has no tokenizer for it: sample without "
                             f"--prompt (token ids come out)")
        print(sample_text(model, model.tokenizer, **settings))
    else:
        from .train.runs import sample_checkpoint
        print(sample_checkpoint(args.checkpoint, **settings))
    return 0


def _download(args):
    from .io.hub import download
    print(download(args.name, revision=args.revision))
    return 0


def _presets(args):
    from .train.presets import PRESETS
    for name, preset in PRESETS.items():
        print(f"{name:20s} {preset.description}")
    return 0


def _demo(args):
    from .demo import serve_demo
    return serve_demo(args.preset, port=args.port, open_browser=not args.no_browser, lab=args.lab)


def _lab(args):
    from .course.notebooks import copy_notebooks
    folder = os.path.abspath(args.folder)
    print(copy_notebooks(folder), flush=True)
    # the extension serving plotly's code to the page (explorer/viz/server.py), on even where the
    # install did not enable it; it keeps the notebooks' saved widget state small
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}",
               f"--ServerApp.port={args.port}", "--ServerApp.ip=127.0.0.1",
               "--ServerApp.jpserver_extensions=explorer.viz.server=True"]
    command += ["--no-browser"] if args.no_browser else []
    # port taken (another Jupyter running)? JupyterLab tries the next ones and says which it got
    print(f"starting JupyterLab in {folder} on port {args.port} (Ctrl-C stops it)", flush=True)
    if os.name == "posix":      # this process becomes the server: Ctrl-C or a signal stops it
        os.execv(command[0], command)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0


def _course_nbgrader(args):
    from .course.nbgrader_export import write_course
    from .course.notebooks import notebook_dir
    assignments = None if args.assignments is None else [a for a in args.assignments.split(",") if a]
    for path in write_course(args.folder, args.notebooks or notebook_dir(), assignments):
        print(path)
    return 0


def _course_handout(args):
    from .course.notebooks import copy_notebooks
    print(copy_notebooks(args.folder, args.notebooks))
    return 0


def _bench(argv):
    from .lab.bench.cli import main_bench
    return main_bench(argv)


def build_parser():
    parser = _Parser(prog="explorer", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a model from a preset; writes a run folder")
    train.add_argument("--preset", default=None,
                       help="preset name (see `explorer presets`; default reverse-tiny)")
    train.add_argument("--steps", type=_at_least(1), default=None,
                       help="training steps (default: the preset's; with --resume: a new total)")
    train.add_argument("--out", default=None,
                       help="folder in which the run folder is created (default: runs)")
    train.add_argument("--seed", type=_at_least(0), default=None, help="random seed (default 0)")
    train.add_argument("--sample-every", type=_at_least(1), default=None,
                       help="print a generated sample every N steps (default: a quarter of the run)")
    train.add_argument("--save-every", type=_at_least(1), default=None,
                       help="write the checkpoint every N steps (default: about once a minute); "
                            "always at the end, and on Ctrl-C")
    train.add_argument("--resume", default=None, metavar="RUN_FOLDER",
                       help="continue a run from its checkpoint, exactly as if it had never stopped")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--threads", type=_threads, default="auto",
                       help='threads for the kernels: a number, "all", or "auto" (the default: '
                            'chosen by timing steps, as other programs may be using cores; under '
                            'mpiexec: each rank gets its share of its machine\'s cores)')
    train.add_argument("--zero", type=_zero_stage, default=0, metavar="{0,1}",
                       help="under mpiexec: 1 shards AdamW's m and v over the ranks (ZeRO-1: "
                            "each keeps 1/N); 0 (the default): every rank keeps all of them")
    train.add_argument("--rank-timeout", type=_positive_float, default=None, metavar="SECONDS",
                       help="under mpiexec: how long a rank waits for the others before it stops "
                            "and names the silent ones (default 300)")
    train.set_defaults(run=_train, parser=train)

    sample = sub.add_parser("sample", help="generate text from a checkpoint or a pretrained GPT-2")
    sample.add_argument("checkpoint", nargs="?", default=None,
                        help="a run folder written by `explorer train`, or its checkpoint.safetensors")
    sample.add_argument("--model", default=None, metavar="NAME",
                        help="a pretrained model instead: gpt2, gpt2-medium, gpt2-large, gpt2-xl, "
                             "distilgpt2, a hub id org/name, or a Hugging Face folder")
    sample.add_argument("--revision", default=None,
                        help="with --model: a branch, tag or commit of the hub model (default main)")
    sample.add_argument("--prompt", default="", help="text to continue")
    sample.add_argument("--tokens", type=_at_least(1), default=200,
                        help="how many tokens to generate")
    sample.add_argument("--temperature", type=_non_negative_float, default=0.8,
                        help="0 picks the likeliest token every time")
    sample.add_argument("--top-k", type=_at_least(1), default=None)
    sample.add_argument("--seed", type=_at_least(0), default=None)
    sample.set_defaults(run=_sample, parser=sample)

    download = sub.add_parser("download", help="fetch a pretrained GPT-2 into the Hugging Face "
                                                "cache (so that it also loads offline)")
    download.add_argument("name", help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2, or a "
                                       "hub id org/name")
    download.add_argument("--revision", default=None,
                          help="a branch, tag, commit or PR ref such as refs/pr/1 (default main)")
    download.set_defaults(run=_download, parser=download)

    presets = sub.add_parser("presets", help="list the training presets")
    presets.set_defaults(run=_presets, parser=presets)

    demo = sub.add_parser("demo", help="serve the instructor's live demo (Voila) in the browser")
    demo.add_argument("--preset", default="reverse-tiny", help="what the model learns (see `explorer presets`)")
    demo.add_argument("--port", type=_at_least(1), default=8866)
    demo.add_argument("--no-browser", action="store_true", help="don't open a browser window")
    demo.add_argument("--lab", action="store_true", help="open it in JupyterLab instead of Voila")
    demo.set_defaults(run=_demo, parser=demo)

    lab = sub.add_parser("lab", help="copy the course's notebooks into a folder and open it in JupyterLab")
    lab.add_argument("folder", nargs="?", default="explorer-course",
                     help="where the notebooks go (default: ./explorer-course); a notebook you "
                          "edited there is never replaced")
    lab.add_argument("--port", type=_at_least(1), default=8888)
    lab.add_argument("--no-browser", action="store_true", help="don't open a browser window")
    lab.set_defaults(run=_lab, parser=lab)

    course = sub.add_parser("course", help="for instructors: the course for nbgrader, or as a handout")
    course_sub = course.add_subparsers(dest="course_command", required=True, parser_class=_Parser)
    nbgrader = course_sub.add_parser(
        "nbgrader", help="write an nbgrader course: nbgrader_config.py and source/<assignment>/")
    nbgrader.add_argument("folder", help="the nbgrader course folder to write")
    nbgrader.add_argument("--assignments", default=None,
                          help="comma-separated notebook stems, e.g. 01_tokens,05_kernel_lab "
                               "(default: every course notebook)")
    nbgrader.add_argument("--notebooks", default=None,
                          help="the folder of course notebooks and their solutions/ (default: "
                               "this checkout's notebooks/)")
    nbgrader.set_defaults(run=_course_nbgrader, parser=nbgrader)
    handout = course_sub.add_parser(
        "handout", help="copy the student notebooks (no solutions) into a folder")
    handout.add_argument("folder")
    handout.add_argument("--notebooks", default=None, help="where the course notebooks are "
                                                          "(default: those shipped with explorer)")
    handout.set_defaults(run=_course_handout, parser=handout)

    sub.add_parser("bench", help="benchmark a training step against PyTorch (see --help)",
                   add_help=False)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args, extra = build_parser().parse_known_args(argv)
    if extra:   # say which command did not expect them
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.run(args)
    except (ValueError, OSError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"explorer {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"explorer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
