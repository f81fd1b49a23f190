"""THE entry for showing an audit: ``render(result, fmt) -> str`` for one report or a training run.

Every :class:`OutputFormat` member has its branch (``assert_never`` holds the match complete). The
HTML renderer draws figures with matplotlib, so it is imported only when that format is asked for:
``sninspect --help`` and the text formats start without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import assert_never

from rich.console import Console

from sninspect.render.data import to_csv, to_json
from sninspect.render.escape import for_terminal
from sninspect.render.formats import OutputFormat
from sninspect.render.legend import legend_lines, legend_markdown
from sninspect.render.markdown import to_markdown
from sninspect.render.report import print_report, strip_trailing, table_text
from sninspect.render.run_view import print_run, run_markdown, run_text
from sninspect.results.report import Report
from sninspect.results.trend import Separate, Trend


def render(result: Report | Trend | Separate, fmt: OutputFormat, *, console: Console | None = None,
           spectra: bool = False, on_checkpoint: Callable[[str], None] | None = None, explain: bool = False) -> str:
    """``result`` (one checkpoint's report, a run of several, or several unrelated ones each on its
    own) as ``fmt`` text.

    ``console``: the table as that console would print it (its width and colours; the terminal);
    without one, the table is plain text 160 columns wide (a file). ``spectra``: JSON includes every
    layer's singular values. ``on_checkpoint``: called with each checkpoint's name once its figures
    are drawn (HTML; a progress hook). ``explain``: the table ends with what each column means
    (Markdown and HTML always have that section)."""
    match fmt:
        case OutputFormat.table:
            text = _table(result, console)
            if explain:
                width = console.width if console is not None else 160
                text = text.rstrip("\n") + "\n\n" + "\n".join(legend_lines(width)) + "\n"
            return text
        case OutputFormat.json:
            return to_json(result, spectra=spectra)
        case OutputFormat.csv:
            return to_csv(_reports(result))
        case OutputFormat.markdown:
            run = run_markdown(result) if isinstance(result, Trend) else ""
            if isinstance(result, Separate):
                run = f"{separate_line(result)}\n\n"
            return run + to_markdown(_reports(result)) + legend_markdown()
        case OutputFormat.html:
            from sninspect.render.html import to_html  # matplotlib: only when drawing

            return to_html(result, on_checkpoint=on_checkpoint)
        case _:
            assert_never(fmt)


def _table(result: Report | Trend | Separate, console: Console | None) -> str:
    if console is None:
        if isinstance(result, Separate):
            return "\n".join([separate_line(result), "", *(table_text(r) for r in result.reports)])
        return run_text(result) if isinstance(result, Trend) else table_text(result)
    with console.capture() as captured:
        if isinstance(result, Trend):
            print_run(result, console)
        elif isinstance(result, Separate):
            console.print(for_terminal(separate_line(result), "yellow"))
            for report in result.reports:
                console.print()
                print_report(report, console)
        else:
            print_report(result, console)
    return strip_trailing(captured.get())


def separate_line(result: Separate) -> str:
    """The line that says why several checkpoints are reported one by one."""
    return f"{len(result.reports)} checkpoints, each reported on its own: {result.why}"


def _reports(result: Report | Trend | Separate) -> list[Report]:
    return [result] if isinstance(result, Report) else list(result.reports)
