"""``normkit lab``: a thin argparse layer over :mod:`normkit.lab`'s Python API.

    normkit lab list                      the experiments and their defaults
    normkit lab ics [--steps N] [--seed S] [--lr LR] [--batch-size B] [--data D] [--out DIR]
    normkit lab batch-size | lr | placement | eval-gap | affine | inference-stats | dropout |
        sequence                          (same flags, plus their own)
    normkit lab all [--smoke] [--out DIR] every experiment and one combined report
    normkit lab report RUN_DIR            re-render report.html from a run directory
    --lang ko                             the report, plots and printed tables in Korean

``--lr`` and ``--batch-size`` take comma-separated lists in the experiments that sweep them.
Mistakes (unknown names, bad values, unreadable data, unwritable output) end with one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from normkit.errors import CommandError
from normkit.lab.i18n import LANGUAGES

COMMON_FLAGS = ("steps", "seed", "lr", "batch_size", "data", "eval_every")


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (``normkit lab ics: error: ...``), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _list(convert, what: str):
    def parse(text: str) -> tuple:
        items = [t.strip() for t in text.split(",")]
        if not text.strip() or any(not t for t in items):
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
        try:
            return tuple(convert(t) for t in items)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}, got {text!r}"
            ) from None

    return parse


def _add_common(parser: argparse.ArgumentParser, defaults: str) -> None:
    g = parser.add_argument_group(f"run settings (defaults: {defaults})")
    g.add_argument("--steps", type=_int, help="training steps per run")
    g.add_argument("--seed", type=_int, help="random seed (same seed, same numbers)")
    g.add_argument(
        "--lr", type=_list(float, "numbers"), help="learning rate(s), e.g. 0.1 or 0.01,0.1"
    )
    g.add_argument(
        "--batch-size", type=_list(int, "integers"), help="batch size(s), e.g. 32 or 2,8,32"
    )
    g.add_argument(
        "--data",
        help="digits, mnist1d, an .npz file or a directory with MNIST/Fashion-MNIST IDX files",
    )
    g.add_argument(
        "--eval-every",
        type=_int,
        help="steps between evaluations (experiments with curves: ics, placement, eval-gap)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, help="output directory (default: lab-output/NAME)")
    out.add_argument("--smoke", action="store_true", help="a tiny configuration (seconds; for CI)")
    out.add_argument("--quiet", action="store_true", help="no progress bars")
    out.add_argument(
        "--lang",
        choices=LANGUAGES,
        help="language of the report, the plots and the printed summary: en (default) or ko",
    )
    out.add_argument(
        "--threads",
        type=_int,
        default=1,
        help="torch intra-op threads (default 1: these models are small, and one thread "
        "avoids OpenMP stalls on a busy machine)",
    )


def register(subparsers) -> None:
    """Add ``normkit lab`` and its subcommands to the top-level parser."""
    from normkit.lab import registry

    lab = subparsers.add_parser(
        "lab",
        help="run the classic normalization experiments; plots and an HTML report",
        description="Run the classic normalization experiments on this machine and write "
        "plots, results (JSON/CSV) and a self-contained HTML report.",
    )
    lab.__class__ = _OneLineParser  # one-line errors for unknown experiment names too
    lab.set_defaults(func=lambda args: _help(lab))
    commands = lab.add_subparsers(
        dest="experiment", metavar="EXPERIMENT", parser_class=_OneLineParser
    )
    listing = commands.add_parser("list", help="list the experiments and their defaults")
    listing.set_defaults(func=_list_main)
    for name in registry.names():
        exp = registry.get(name)
        parser = commands.add_parser(
            name,
            help=exp.summary,
            description=sys.modules[exp.run.__module__].__doc__ or exp.title,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        d = exp.defaults
        _add_common(
            parser,
            f"--steps {d.steps} --lr {','.join(map(str, d.lr))} --batch-size "
            f"{','.join(map(str, d.batch_size))} --data {d.data} --seed {d.seed} "
            f"--eval-every {d.eval_every}",
        )
        own = parser.add_argument_group(f"{name} options")
        for option in exp.options:
            default = option.default
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            own.add_argument(
                "--" + option.name.replace("_", "-"),
                dest=f"opt_{option.name}",
                type=str,
                metavar=option.name.upper(),
                help=f"{option.help} (default: {shown})",
            )
        parser.set_defaults(func=_experiment_main, name=name)
    everything = commands.add_parser(
        "all", help="every experiment with its defaults, one combined report"
    )
    _add_common(everything, "each experiment's own; flags given here apply to all")
    everything.set_defaults(func=_all_main)
    report = commands.add_parser("report", help="re-render report.html from run directories")
    report.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    report.add_argument("--out", type=Path, help="HTML file (default: RUN_DIR/report.html)")
    report.set_defaults(func=_report_main)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# ----------------------------------------------------------------------------- commands
def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in COMMON_FLAGS}


def _set_threads(n: int) -> None:
    import torch

    if n < 1:
        raise CommandError(f"--threads must be a positive integer, got {n}")
    torch.set_num_threads(n)


def _experiment_main(args: argparse.Namespace) -> int:
    from normkit.lab import i18n, registry, runner
    from normkit.lab.errors import LabError

    _set_threads(args.threads)
    try:
        exp = registry.get(args.name)
        options = {
            o.name: o.parse(getattr(args, f"opt_{o.name}"))
            for o in exp.options
            if getattr(args, f"opt_{o.name}") is not None
        }
        cfg = exp.config(smoke=args.smoke, **_overrides(args), options=options)
        runner.check_config(args.name, cfg)
        out = runner.prepare_out_dir(
            args.out if args.out is not None else Path("lab-output") / args.name
        )
        with i18n.language(args.lang):
            _announce(exp, cfg, out)
            with runner.quiet(args.quiet):
                result = runner.run_experiment(args.name, cfg, out)
            _print_result(result)
    except LabError as exc:
        raise CommandError(str(exc)) from None
    print(f"report: {Path(result.out_dir, 'report.html').resolve()}")
    return 0


def _all_main(args: argparse.Namespace) -> int:
    from normkit.lab import i18n, runner
    from normkit.lab.errors import LabError

    _set_threads(args.threads)
    out = args.out if args.out is not None else Path("lab-output") / "all"
    start = time.perf_counter()
    try:
        with i18n.language(args.lang), runner.quiet(args.quiet):
            results = runner.run_all(
                out, smoke=args.smoke, on_result=_print_result, **_overrides(args)
            )
            _print_overview(results, time.perf_counter() - start)
    except LabError as exc:
        raise CommandError(str(exc)) from None
    print(f"report: {Path(out, 'report.html').resolve()}")
    return 0


def _report_main(args: argparse.Namespace) -> int:
    from normkit.lab import report
    from normkit.lab.errors import LabError

    try:
        dirs = [d for run_dir in args.run_dirs for d in report.expand_run_dirs(run_dir)]
        target = args.out if args.out is not None else args.run_dirs[0] / "report.html"
        report.write_report(target, dirs)
    except LabError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write {target}: {exc.strerror or exc}") from None
    print(f"report: {Path(target).resolve()}")
    return 0


def _list_main(args: argparse.Namespace) -> int:
    from normkit.lab import registry

    rows = []
    for name in registry.names():
        exp = registry.get(name)
        d = exp.defaults
        rows.append([name, exp.summary, d.data, str(d.steps)])
    _table("normkit lab experiments", ["name", "what it shows", "data", "steps"], rows)
    print("normkit lab NAME --help  shows an experiment's flags; normkit lab all  runs them all")
    return 0


# ----------------------------------------------------------------------------- printing
def _console():
    try:
        from rich.console import Console
    except ImportError:  # pragma: no cover - rich is in the lab extra
        return None
    return Console(highlight=False, soft_wrap=True)


def _table(title: str, columns: list[str], rows: list[list[Any]], caption: str | None = None):
    console = _console()
    if console is None:  # pragma: no cover
        print(title)
        print("  ".join(columns))
        for row in rows:
            print("  ".join(str(v) for v in row))
        return
    from rich.table import Table

    table = Table(title=title, caption=caption, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    console.print(table)


def _announce(exp, cfg, out: Path) -> None:
    from normkit.lab.datasets import load_dataset
    from normkit.lab.experiments._common import data_summary
    from normkit.lab.i18n import tr

    print(
        tr(
            "cli.announce",
            name=exp.name,
            title=tr(f"{exp.name}.title"),
            data=data_summary(load_dataset(cfg.data)),
            steps=cfg.steps,
            lr=",".join(map(str, cfg.lr)),
            batch=",".join(map(str, cfg.batch_size)),
            seed=cfg.seed,
            out=out,
        )
    )


def _print_result(result) -> None:
    from normkit.lab.i18n import tr

    seconds = f"{result.seconds:.1f}"
    _table(
        f"{result.experiment}: {result.title}",
        result.columns,
        result.rows,
        caption=tr("cli.took", lang=result.lang, name=result.experiment, seconds=seconds),
    )
    print(f">> {result.experiment}: {result.headline}")
    print(tr("cli.files", lang=result.lang, seconds=seconds, out=result.out_dir))
    sys.stdout.flush()


def _print_overview(results, total: float) -> None:
    from normkit.lab.i18n import tr

    rows = [[r.experiment, r.headline, f"{r.seconds:.1f} s"] for r in results]
    columns = [tr(f"report.col_{c}") for c in ("experiment", "headline", "time")]
    _table(tr("cli.overview"), columns, rows)
    print(tr("cli.total", seconds=f"{total:.1f}"))
