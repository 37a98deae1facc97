"""What a long command shows: one line per stage (``sft … 12.3 s``), a progress bar on an
interactive terminal, and nothing else; library warnings and trainer logs go to a log file in
the run folder (``-v`` shows them on the terminal too).

The rule for "interactive" is the one the measurement progress bar uses: stderr is a terminal
and ``$CI`` is unset. Stage lines are printed either way (they are the command's own output);
only the bars and spinners need a terminal.

>>> import io
>>> c = Console(stream=io.StringIO(), interactive=False)
>>> with c.stage("pretrain"):
...     pass
>>> c.stream.getvalue().startswith("pretrain … ")
True
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, TextIO

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
TRAIN_LOGGER = "crystallab.train"  # the trainers' per-step logs (loss, grad norm, ...)
DETAIL_LOGGER = "crystallab"  # crystallab's own detail messages (loss at the end of a phase, ...)
SHOWN = "crystallab_shown"  # a log record's mark: already printed on the terminal
# libraries whose own stderr handlers and progress bars are replaced by the log file
_LIBRARIES = ("transformers", "datasets", "huggingface_hub", "trl", "peft", "accelerate", "torch")


def is_interactive(stream: TextIO | None = None) -> bool:
    """A progress bar belongs on ``stream`` (stderr): a terminal, outside CI."""
    s = stream or sys.stderr
    return bool(getattr(s, "isatty", lambda: False)()) and not os.environ.get("CI")


class Stage:
    """One running stage: ``advance`` moves its bar (when it has one)."""

    def __init__(self, name: str, bar: Any = None, task: Any = None):
        self.name = name
        self.note = ""  # shown after the seconds: ``report → PATH``, ``reused``
        self._bar, self._task = bar, task

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)


class Console:
    """Stage lines, bars and the log file of one command (see the module docstring)."""

    def __init__(self, verbose: bool = False, stream: TextIO | None = None, interactive: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.verbose = verbose
        self.interactive = is_interactive(self.stream) if interactive is None else interactive
        self.detail = logging.getLogger(DETAIL_LOGGER)

    def line(self, text: str) -> None:
        """A line the user reads: printed, and kept in the log file."""
        print(text, file=self.stream, flush=True)
        self.detail.info(text, extra={SHOWN: True})

    def debug(self, text: str) -> None:
        """A detail: the log file, and the terminal with ``-v`` (inside :meth:`logging_to`)."""
        self.detail.info(text)

    @contextmanager
    def stage(self, name: str, total: int | None = None, bar: bool = True) -> Iterator[Stage]:
        """Run one stage; print ``name … seconds`` when it ends. On a terminal, ``total`` steps
        get a bar (a spinner without ``total``); ``bar=False`` when the stage draws its own."""
        t0 = time.perf_counter()
        if not (self.interactive and bar):
            st = Stage(name)
            yield st
        else:
            from rich.console import Console as RichConsole
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            cols = [SpinnerColumn(), TextColumn("{task.description}")]
            if total:
                cols += [BarColumn(), MofNCompleteColumn()]
            with Progress(*cols, TimeElapsedColumn(), console=RichConsole(file=self.stream), transient=True) as p:
                st = Stage(name, p, p.add_task(name, total=total or None))
                yield st
        note = f" {st.note}" if st.note else ""
        self.line(f"{name} … {time.perf_counter() - t0:.1f} s{note}")

    @contextmanager
    def logging_to(self, path: str | Path | None) -> Iterator[Path | None]:
        """Send library warnings, trainer logs and crystallab's details to ``path`` (appended),
        and to the terminal too with ``-v``; crystallab's own warnings stay one line on the
        terminal. A folder that cannot be created leaves the file out (the command's own
        error about that folder is the clearer message)."""
        handlers: list[logging.Handler] = []
        file = Path(path) if path is not None else None
        if file is not None:
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
                fh: logging.Handler = logging.FileHandler(file, encoding="utf-8")
            except OSError:
                file = None
            else:
                fh.setFormatter(logging.Formatter(LOG_FORMAT))
                handlers.append(fh)
        if self.verbose:
            sh = logging.StreamHandler(self.stream)
            sh.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            sh.addFilter(lambda record: not getattr(record, SHOWN, False))  # printed already
            handlers.append(sh)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.INFO)
        for h in handlers:
            root.addHandler(h)
        shown = warnings.showwarning
        warnings.showwarning = self._show_warning
        _ROUTING.append(self)
        route_library_logs()
        try:
            yield file
        finally:
            _ROUTING.pop()
            warnings.showwarning = shown
            for h in handlers:
                root.removeHandler(h)
                h.close()
            root.setLevel(level)

    def _show_warning(
        self,
        message: Any,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        """crystallab's warnings: one line on the terminal; everyone else's: the log file."""
        if category.__module__.split(".")[0] == "crystallab":
            print(f"crystallab: warning: {message}", file=self.stream, flush=True)
            self.detail.warning(str(message), extra={SHOWN: True})
            return
        text = warnings.formatwarning(message, category, filename, lineno, "").rstrip()  # "": no source line
        logging.getLogger("py.warnings").warning(text)


_ROUTING: list[Console] = []  # the consoles whose logging_to is active (innermost last)


def routing() -> bool:
    """Whether a command is routing library logs into its log file right now."""
    return bool(_ROUTING)


def route_library_logs() -> None:
    """Make the libraries already imported log through the root logger (so into the log file)
    instead of their own stderr handlers, without their progress bars. Idempotent; the lab
    calls it again after it imports the trainers."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()
        hf_logging.set_verbosity_warning()  # a model loaded earlier may have silenced it
        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
        _drop_stream_handlers("datasets")
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    for name in _LIBRARIES:
        logger = logging.getLogger(name)
        logger.propagate = True


def _drop_stream_handlers(name: str) -> None:
    logger = logging.getLogger(name)
    for h in list(logger.handlers):
        if type(h) is logging.StreamHandler:
            logger.removeHandler(h)
