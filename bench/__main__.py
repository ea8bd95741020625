"""python -m bench: parse arguments, call the command, map errors to exit codes.

Exit codes (EXIT_CODES_HELP): 0 every selected backbone ran; 1 some rows failed (all rows
still written); 2 usage or data error; 3 environment failure (disk full, permission, I/O);
130 interrupted (finished rows kept). Errors and bench's warnings are one line each on stderr.

The flags are generated from the fields of RunConfig (the protocol) and SweepOptions (how the
sweep runs): a field's metadata holds its help, choices and metavar, its default is the flag's.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import warnings
from dataclasses import Field, fields

from bench import commands
from bench.commands import Interrupted, SweepOptions, UsageError
from bench.config import ConfigError, RunConfig
from bench.console import one_line
from bench.export import DEFAULT_FORMAT as EXPORT_DEFAULT_FORMAT
from bench.export import FORMATS as EXPORT_FORMATS
from bench.export import STAGES as EXPORT_STAGES
from bench.export import export
from bench.fsio import FolderBusy, os_error_line
from bench.predict import DEFAULT_BATCH_SIZE, predict
from bench.weights_check import weights

EXIT_OK, EXIT_FAILED_ROWS, EXIT_USAGE, EXIT_ENVIRONMENT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES_HELP = (
    "Exit codes: 0 every backbone ran; 1 some rows failed (every row is still written); 2 usage "
    "or data error; 3 environment failure (disk full, permission, I/O error); 130 interrupted "
    "(finished rows kept). Each error is one line on stderr.")
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
COMMANDS = ("run", "list", "report", "export", "predict", "weights")
HELP = ("-h", "--help")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(f"{message} (see: {self.prog} --help)")


def flag(field: Field) -> str:
    """The command-line spelling of a field: --image-size, --no-cache for a True switch."""
    if field.metadata.get("positional"):
        return field.name
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def add_flags(parser: argparse.ArgumentParser, cls: type, only: tuple[str, ...] = ()) -> None:
    """One argument per field of `cls` declared with config.knob (or only those named)."""
    for field in fields(cls):
        if "help" not in field.metadata or (only and field.name not in only):
            continue
        kwargs = {k: v for k, v in field.metadata.items()
                  if k not in ("choices", "positional", "identity", "aliases")}
        dest = {} if field.metadata.get("positional") else {"dest": field.name}
        flags = (flag(field), *field.metadata.get("aliases", ()))  # an older spelling too
        if isinstance(field.default, bool):
            action = "store_false" if field.default else "store_true"
            parser.add_argument(*flags, action=action, **dest, **kwargs)
            continue
        if "choices" in field.metadata:  # shown here, checked by the dataclass alone
            kwargs.setdefault("metavar", "|".join(field.metadata["choices"]))
        if isinstance(field.default, int | float):
            kwargs.setdefault("type", type(field.default))
        if field.default not in (None, ()):
            kwargs["help"] += " (default: %(default)s)"
        parser.add_argument(*flags, default=field.default, **dest, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m bench",
        description="Train the Carpentries transfer-learning lesson's head on frozen "
        "keras.applications backbones and write a leaderboard.",
        epilog="Without a command, run is meant: python -m bench --all is python -m bench run "
        "--all. See python -m bench run --help for its flags. " + EXIT_CODES_HELP)
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    run = sub.add_parser(
        "run", help="run backbones under the lesson's protocol (the default command)",
        description="Train the lesson's head on each backbone and write runs.jsonl, the "
        "leaderboard and plots. Every default is the lesson's value but --preprocess: native "
        "(each model's own preprocessing); --preprocess lesson reproduces the episode's /255.",
        epilog="Rebuild the leaderboard from runs.jsonl: python -m bench report --out DIR. "
        + EXIT_CODES_HELP)
    add_flags(run, SweepOptions)
    add_flags(run, RunConfig)
    sub.add_parser("list", help="print the registry",
                   description="Print the registry: every backbone bench knows.")
    report = sub.add_parser(
        "report", help="rebuild leaderboard.md, leaderboard.csv and plots from runs.jsonl",
        description="Rebuild leaderboard.md, leaderboard.csv and plots from runs.jsonl.")
    add_flags(report, SweepOptions, only=("out", "margin"))
    _add_export(sub)
    for name, (make, help_) in _OWN_PARSERS.items():
        own = make()
        sub.add_parser(name, help=help_, description=own.description, epilog=own.epilog,
                       parents=[own], add_help=False)
    return parser


_EXPORT_HELP = "write a run's trained classifier as one model (.keras, OpenVINO IR, SavedModel)"
_EXPORT_DESCRIPTION = (
    "Write one model (raw uint8 images of any size -> resize and preprocessing -> frozen or "
    "fine-tuned backbone -> trained head -> class logits) for a row of runs.jsonl, and its "
    "class names in FILE.classes.json. The .keras file loads with keras.models.load_model, "
    "without bench.")


def _export_parser() -> argparse.ArgumentParser:
    export = _Parser(prog="python -m bench export", description=_EXPORT_DESCRIPTION)
    export.add_argument("name", nargs="?", metavar="NAME",
                        help="the backbone whose latest run to export (default: the top of the "
                        "leaderboard)")
    export.add_argument("file", metavar="FILE",
                        help="the model to write: FILE.keras (keras), FILE.xml and FILE.bin "
                        "(openvino), a folder (saved_model)")
    export.add_argument(
        "--format", default=EXPORT_DEFAULT_FORMAT, metavar="|".join(EXPORT_FORMATS),
        help="keras: loads wherever Keras does; openvino: OpenVINO IR, to compile with "
        "FILE.classes.json's openvino_compile_config (f32), as the row's infer_ms was measured; "
        "saved_model: a TensorFlow SavedModel folder (endpoint serve); auto: the runtime the "
        "row's features were extracted with, openvino or else keras; FILE without a suffix gets "
        "the format's (default: %(default)s)")
    export.add_argument(
        "--stage", default=None, metavar="|".join(EXPORT_STAGES),
        help="frozen: the run's frozen backbone and head; fine-tuned: its --fine-tune row's "
        "whole fine-tuned model (default: the fine-tuned one when fine-tuning raised the test "
        "accuracy of the frozen run it continues, else the frozen one)")
    add_flags(export, SweepOptions, only=("out",))
    add_flags(export, RunConfig, only=("weights_dir",))
    return export


def _add_export(sub) -> None:
    sub.add_parser("export", help=_EXPORT_HELP, description=_EXPORT_DESCRIPTION,
                   parents=[_export_parser()], add_help=False)


def _predict_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m bench predict",
        description="Print each image's class and probability under a model written by python "
        "-m bench export, as CSV (path,class,probability): class names from FILE.classes.json "
        "beside the model, probability the softmax of its logits.",
        epilog="Exit codes: 0 every image predicted; 2 a usage or data error (a missing "
        "model, no images, a corrupt image), then nothing is written. Errors are one line on "
        "stderr.")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="image files, and folders whose images (subfolders included) are "
                        "read in sorted order")
    parser.add_argument("--model", required=True, metavar="FILE.keras",
                        help="a model written by python -m bench export")
    parser.add_argument("--output", metavar="FILE.csv",
                        help="write the CSV to this file (atomically) instead of stdout")
    parser.add_argument("--top", type=int, default=1, metavar="K",
                        help="also the next K-1 classes and their probabilities (default: 1)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help="images of one size per forward pass (default: %(default)s)")
    return parser


def _weights_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m bench weights",
        description="List the Keras ImageNet weights files the named backbones load at "
        "--image-size, the URL Keras downloads each from, and whether the folder a run reads "
        "first holds it (--weights-dir, else $BENCH_WEIGHTS_DIR, else Keras' cache "
        "~/.keras/models): size, sha256, and the hash Keras publishes checked.",
        epilog="Exit codes: 0 every file is there (a MobileNet file of another resolution "
        "standing in counts); 1 some are missing or fail their hash; 2 a usage error.")
    add_flags(parser, SweepOptions, only=("backbones", "all"))
    add_flags(parser, RunConfig, only=("image_size", "weights_dir"))
    return parser


# commands with parsers of their own: positionals and options in any order
_OWN_PARSERS = {
    "predict": (_predict_parser, "print an exported model's class and probability per image "
                "as CSV"),
    "weights": (_weights_parser, "list the weights files backbones need and check a folder "
                "for them"),
}


def parse(argv: list[str]) -> argparse.Namespace:
    """The arguments, with run meant when no command is named."""
    if argv[:1] and argv[0] in _OWN_PARSERS:
        args = _OWN_PARSERS[argv[0]][0]().parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    if argv[:1] == ["export"]:
        # NAME, options and FILE in any order: export NAME --out DIR FILE.keras
        args = _export_parser().parse_intermixed_args(argv[1:])
        args.command = "export"
        return args
    if argv[:1] and (argv[0] in COMMANDS or argv[0] in HELP):
        return build_parser().parse_args(argv)
    return build_parser().parse_args(["run", *argv])


def run_options(args: argparse.Namespace) -> tuple[SweepOptions, RunConfig]:
    """The run command's options and protocol; a value they refuse is a usage error naming
    its flag."""
    spelling = {f.name: flag(f) for cls in (SweepOptions, RunConfig) for f in fields(cls)}
    try:
        options = SweepOptions(**_given(args, SweepOptions))
        return options, RunConfig(**_given(args, RunConfig), verbose=options.verbose)
    except ConfigError as err:
        raise UsageError(f"{spelling.get(err.name, err.name)} {err.reason}") from None


def _given(args: argparse.Namespace, cls: type) -> dict:
    """The parsed values of cls's fields: the command line overrides only what cls has."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}


def _run(args: argparse.Namespace) -> int:
    options, config = run_options(args)
    if options.list:
        commands.list_backbones()
        return EXIT_OK
    try:
        failed = commands.run(options, config)
    except Interrupted as err:
        print(f"bench: interrupted; {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED_ROWS if failed else EXIT_OK


def _one_line_warning(other, message, category, filename, lineno, file=None, line=None) -> None:
    """bench's own warnings (a skipped runs.jsonl line, ...) as one line, like its errors;
    other libraries' as `other` (Python's usual display) shows them."""
    if not os.path.abspath(filename).startswith(_PACKAGE_DIR):
        other(message, category, filename, lineno, file, line)
        return
    print(f"bench: warning: {one_line(message)}", file=file or sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    shown = warnings.showwarning
    warnings.showwarning = functools.partial(_one_line_warning, shown)
    try:
        args = parse(list(sys.argv[1:] if argv is None else argv))
        if args.command == "list":
            commands.list_backbones()
        elif args.command == "report":
            try:
                margin = SweepOptions(margin=args.margin).margin  # checked as the run's is
            except ConfigError as err:
                raise UsageError(f"--margin {err.reason}") from None
            commands.report(args.out, margin)
        elif args.command == "export":
            export(args.name, args.out, args.file, args.weights_dir, args.format, args.stage)
        elif args.command == "predict":
            predict(args.images, args.model, args.output, args.top, args.batch_size)
        elif args.command == "weights":
            failing = weights(args.backbones, args.all, args.image_size, args.weights_dir)
            return EXIT_FAILED_ROWS if failing else EXIT_OK  # 1: files missing or damaged
        else:
            return _run(args)
    except (UsageError, FolderBusy) as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # disk full, permission, I/O: not the user's arguments, not a bug
        print(f"bench: error: {os_error_line(err)}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    finally:
        warnings.showwarning = shown
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
