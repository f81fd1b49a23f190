"""``graph``: the topology-aware Lipschitz sandwich of an exported network (or, opted in, the user's
own module with a checkpoint loaded into it)."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from sninspect.cli.app import app
from sninspect.cli.errors import handle_errors, say
from sninspect.cli.options import (
    FormatOpt,
    KeyOpt,
    OutputFileOpt,
    PlotFormatOpt,
    PlotsOpt,
    QuietOpt,
    ReportForceOpt,
    UnsafeOpt,
    examples,
    memory_limit,
    warn_unsafe,
)
from sninspect.cli.output import choose_format, refuse_early, write_output
from sninspect.errors import UsageError
from sninspect.io.inputs import InputSet
from sninspect.render import PlotFormat


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"--input-shape {text!r}: expected sizes without the batch axis, e.g. 3,64,64") from None
    if not shape or any(n < 1 for n in shape):
        raise UsageError(f"--input-shape {text!r}: sizes must be positive")
    from sninspect.audit.graph.interpret import MAX_ELEMENTS

    if math.prod(shape) > MAX_ELEMENTS:  # refused before the user's module is built or traced
        raise UsageError(f"--input-shape {text!r}: {math.prod(shape)} entries per input, more than the "
                         f"{MAX_ELEMENTS} sninspect bounds a graph at")
    return shape


def _model_sources(spec: str) -> list[Path]:
    """The files of the ``--model`` module and of each package above it (once imported), so that no
    output replaces the user's code."""
    dotted = spec.partition(":")[0].split(".")
    out = []
    for depth in range(1, len(dotted) + 1):
        module = sys.modules.get(".".join(dotted[:depth]))
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            out.append(Path(file))
    return out


@contextmanager
def _torch_logging_silenced() -> Iterator[None]:
    """No log record of any logger while the user's module is built and traced (torch logs a failed
    fake-tensor run as a 20-line traceback before raising the error we report in one line)."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


@app.command(epilog=examples(
    "sninspect graph D.pt2",
    "sninspect graph D.pt2 -o bound.html --plots figures/",
    "sninspect graph D.pt --model mygan.models:Discriminator --input-shape 3,32,32",
))
@handle_errors
def graph(
    model_file: Annotated[Path, typer.Argument(readable=False,
                                               metavar="CHECKPOINT", help="A torch.export archive (.pt2, from "
                                               "torch.export.save: read as data, no code from it runs), or "
                                               "with --model a checkpoint to load into your module.")],
    format: FormatOpt = None,
    output: OutputFileOpt = None,
    force: ReportForceOpt = False,
    lower: Annotated[bool, typer.Option("--lower/--no-lower", help="Search inputs for the certified lower "
                                        "bound (the slow part).")] = True,
    starts: Annotated[int, typer.Option("--starts", min=1, max=1000, help="Starting inputs of the lower-bound "
                                        "search (half Gaussian, half smooth image-like).")] = 4,
    steps: Annotated[int, typer.Option("--steps", min=0, max=100000, help="Gradient-ascent steps per "
                                       "start.")] = 30,
    seed: Annotated[int, typer.Option("--seed", min=-(2**63), max=2**63 - 2, help="Seed of the search (the "
                                      "result is deterministic).")] = 0,
    plots: PlotsOpt = None,
    plot_format: PlotFormatOpt = PlotFormat.png,
    user_model: Annotated[str | None, typer.Option("--model", metavar="PACKAGE.MODULE:FACTORY", help="IMPORTS "
                                                   "AND RUNS YOUR CODE: build the module with this factory, "
                                                   "load CHECKPOINT's state dict into it and trace it with "
                                                   "torch.export. Needs --input-shape.")] = None,
    input_shape: Annotated[str | None, typer.Option("--input-shape", metavar="C,H,W", help="With --model: one "
                                                    "input's shape without the batch axis (a .pt2 carries "
                                                    "its own).")] = None,
    key: KeyOpt = None,
    unsafe_load: UnsafeOpt = False,
    max_memory: Annotated[str | None, typer.Option("--max-memory", help="Memory reading the archive and "
                                                   "the audit may use, e.g. 2G or 512M (default: the memory "
                                                   "available now); refused with the size it would need, "
                                                   "before anything is allocated.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Certified upper and lower bounds on an exported network's Lipschitz constant, with real strides,
    padding, residual paths and pooling; each operator's rule is shown."""
    from sninspect.audit.graph.analysis import GraphOptions, analyze_graph
    from sninspect.audit.memory import budget
    from sninspect.io.exported import load_exported
    from sninspect.render import render
    from sninspect.render.terminal import terminal_console

    fmt = choose_format(format, output)
    limit = memory_limit(max_memory)
    inputs = InputSet.of([model_file])  # an index's shards too; with --model, its source files below
    refuse_early(output, inputs, force=force)
    if plots is not None:
        from sninspect.render.plots.files import check_plot_paths

        check_plot_paths([plots / f"graph_depth.{plot_format.value}"], plots, force=force, inputs=inputs)
    if user_model is not None:
        if input_shape is None:
            raise UsageError("--model needs --input-shape (e.g. 3,64,64): the graph bound is for one input size")
        from sninspect.io.user_model import export_user_model

        warn_unsafe(unsafe_load)
        if not quiet:
            say(f"note: --model imports and runs {user_model.split(':')[0]} (your code)")
        shape = _shape(input_shape)
        with _torch_logging_silenced():  # a failed trace is our one line, not torch's logged traceback
            try:
                exported = export_user_model(user_model, model_file, shape, key=key, unsafe_load=unsafe_load,
                                             budget=budget(limit))
            finally:
                inputs.add(_model_sources(user_model))  # imported now: its files are inputs as well
    else:
        if input_shape is not None or key is not None:
            raise UsageError("--input-shape and --key apply with --model; a .pt2 carries its own input shape")
        exported = load_exported(model_file, budget=budget(limit))
    options = GraphOptions(lower=lower, starts=starts, steps=steps, seed=seed, max_memory=limit)
    if not quiet and lower:
        say(f"searching {starts} starts x {steps} steps for the lower bound (--no-lower skips it)")
    result = analyze_graph(exported, options)
    width = terminal_console().width if output is None else 160  # a file: the report table's width
    text = render(result, fmt, width=width)
    if plots is not None:  # checked again now that the --model sources are known, before anything is written
        check_plot_paths([plots / f"graph_depth.{plot_format.value}"], plots, force=force, inputs=inputs)
    write_output(text, output, inputs, force=force)
    if plots is not None:
        from sninspect.render.plots.files import save_figures
        from sninspect.render.plots.graph import graph_depth_figure

        written = save_figures({"graph_depth": graph_depth_figure(result)}, plots, plot_format, force=force,
                               inputs=inputs)
        if not quiet:
            say(f"wrote {len(written)} figure to {plots}")
