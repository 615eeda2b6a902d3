"""Progress and live displays in the notebook: image builds, long measured work, a refreshing report."""

from __future__ import annotations

import time
from html import escape
from typing import Any

from mlops_magics.errors import InvalidInputError
from mlops_magics.packaging.engine import BuildStep
from mlops_magics.targets.base import Status


def refresh_display(report: Any, every: float, duration: float | None) -> None:
    """Show ``report`` and redraw it with ``report.refresh()`` every ``every`` seconds, until interrupted or
    ``duration`` seconds pass."""
    from IPython.display import display

    if every <= 0:
        raise InvalidInputError(f"--refresh {every} is invalid: give seconds, e.g. --refresh 5.")
    handle = display(report, display_id=True)
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while deadline is None or time.monotonic() + every <= deadline:
            time.sleep(every)
            report = report.refresh()
            handle.update(report)
    except KeyboardInterrupt:
        print("(stopped refreshing)")


class BuildProgress:
    """Shows an image build in the notebook: a progress bar with the current step, updated in place.

    Nothing is shown until a build starts (an image already built is not rebuilt). With ``full_log`` every
    output line is printed as well.
    """

    def __init__(self, full_log: bool = False) -> None:
        self.full_log = full_log
        self.last: BuildStep | None = None
        self.shown_at = 0.0
        self.handle: Any = None

    def __call__(self, step: BuildStep | Status) -> None:
        if isinstance(step, Status):  # a deployment's own steps: LiveStatus shows them
            return
        new_step = self.last is None or step.number != self.last.number
        if self.full_log:
            print(f"Step {step.number}/{step.total} : {step.instruction}" if new_step else step.line, flush=True)
        self.last = step
        now = time.monotonic()
        if self.handle is None:
            from IPython.display import display

            self.handle = display(self, display_id=True)
            self.shown_at = now
        elif new_step or now - self.shown_at > 0.2:
            self.shown_at = now
            self.handle.update(self)

    def finish(self) -> None:
        """Show the final state (every step done)."""
        if self.handle is not None:
            self.handle.update(self)

    def __repr__(self) -> str:
        step = self.last
        if step is None or not step.total:
            return "Building: sending the build context..."
        done = int(30 * step.number / step.total)
        return f"[{'#' * done}{'.' * (30 - done)}] step {step.number}/{step.total}: {step.instruction[:80]}"

    def _repr_html_(self) -> str:
        step = self.last
        if step is None or not step.total:
            return "<div>Building: sending the build context&hellip;</div>"
        cached = " (cached)" if step.cached else ""
        return (f'<div><progress value="{step.number}" max="{step.total}" style="width:240px"></progress> '
                f"step {step.number}/{step.total}{cached}: <code>{escape(step.instruction[:120])}</code>"
                f'<div style="color:#666;font-size:11px;font-family:monospace">{escape(step.line[:160])}</div></div>')


class StepProgress:
    """A progress bar for long work measured in steps (profiling), updated in place in the notebook."""

    def __init__(self) -> None:
        self.what, self.done, self.total = "starting", 0, 0
        self.handle: Any = None

    def __call__(self, what: str, done: int, total: int) -> None:
        self.what, self.done, self.total = what, done, total
        if self.handle is None:
            from IPython.display import display

            self.handle = display(self, display_id=True)
        else:
            self.handle.update(self)

    def __repr__(self) -> str:
        filled = int(30 * self.done / self.total) if self.total else 0
        return f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {self.what}"

    def _repr_html_(self) -> str:
        return (f'<div><progress value="{self.done}" max="{max(self.total, 1)}" style="width:240px"></progress> '
                f"{self.done}/{self.total} {escape(self.what)}</div>")


class LiveStatus:
    """One line in the notebook, updated in place while a slow step works, that ends in its result.

    Gets the API's progress events: :class:`~mlops_magics.targets.base.Status` (``what``, ``elapsed``) and image
    build steps (shown as :class:`BuildProgress` does). Nothing is shown until the first event; :meth:`done`
    and :meth:`failed` turn the line into the result.
    """

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.text = f"{subject}: starting"
        self.build = BuildProgress()
        self.building = False
        self.started = time.monotonic()
        self.handle: Any = None

    def __call__(self, event: BuildStep | Status) -> None:
        if isinstance(event, BuildStep):
            self.building = True
            self.build.last = event
            self.text = f"{self.subject}: building the image, {self.build!r}"
        else:
            self.building = False
            self.text = f"{self.subject}: {event.what} ... {event.elapsed:.0f} s"
        self._show()

    def _show(self) -> None:
        if self.handle is None:
            from IPython.display import display

            self.handle = display(self, display_id=True)
        else:
            self.handle.update(self)

    def done(self, result: str) -> None:
        """End the line in the result (``result`` is what is true now, e.g. 'serving at URL')."""
        self.building = False
        self.text = f"{self.subject}: {result} (in {time.monotonic() - self.started:.1f} s)"
        self._show()

    def failed(self) -> None:
        """End the line saying that the step failed (the error itself is shown below it)."""
        if self.handle is not None:
            self.building = False
            self.text = f"{self.subject}: failed after {time.monotonic() - self.started:.1f} s (see below)"
            self._show()

    def __enter__(self) -> LiveStatus:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self.failed()

    def __repr__(self) -> str:
        return f"[mlops] {self.text}"

    def _repr_html_(self) -> str:
        if self.building:
            return f'<div class="mlops-status">{escape(self.subject)}: {self.build._repr_html_()}</div>'
        return f'<div class="mlops-status">{escape(self.text)}</div>'
