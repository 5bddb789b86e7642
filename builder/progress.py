"""Build events and how they are shown: a live terminal display (builder.progress_tty),
plain numbered lines, quiet, or one JSON event a line.

The solver only calls the methods of ``Progress``; how the events look is decided here.
"""
from __future__ import annotations

import _thread  # not threading: a replay (builder.warm) shows its progress without loading it
import atexit
import codecs
import os
import sys
import time

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing: a replay never needs it
if TYPE_CHECKING:
    from typing import IO, Any

__all__ = ["Progress"]


class Progress:
    def __init__(self, mode: str = "plain", stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "tty" if _isatty(self.stream) else "plain"
        self.mode = mode
        self._tty = None
        if mode == "tty":
            from .progress_tty import TtyDisplay

            self._tty = TtyDisplay(self.stream)
            # Whatever ends the build (a result, an error), the live region is cleared first.
            atexit.register(self.close)
        self._lock = _thread.allocate_lock()
        # A step's output arrives in chunks cut anywhere: one UTF-8 decoder a step keeps a
        # character whole across chunks, and (plain mode) the step whose last line has no
        # newline yet is continued in place, as BuildKit's plain printer does.
        self._decoders: dict[int, codecs.IncrementalDecoder] = {}
        self._open_line: int | None = None
        self._counter = 0
        self._started: dict[int, float] = {}
        self.t0 = time.monotonic()
        self.steps_total = 0
        self.steps_cached = 0
        # Every event in order, when someone records the build (``builder.warm.Recorder``).
        self.journal: list[list[object]] | None = None
        # The build checks' findings (``builder.checks``), summed up by ``finish``; the
        # Dockerfile's lines and name for the --debug summary's excerpts.
        self.findings: list[Any] = []
        self.source: tuple[tuple[str, ...], str] | None = None
        self.debug = False

    def close(self) -> None:
        """End the live display (if any), leaving only the permanent lines on screen."""
        with self._lock:
            self._end_open_line()
        if self._tty is not None:
            self._tty.close()
            self._tty = None

    def _emit(self, text: str, **event: object) -> None:
        if self._tty is not None:
            self._tty.message(text)
            return
        with self._lock:
            if self.mode == "quiet":
                return
            if self.mode == "rawjson":
                import json  # only this mode writes JSON: a replay in another starts faster

                event["time"] = round(time.monotonic() - self.t0, 3)
                self.stream.write(json.dumps(event, sort_keys=True) + "\n")
            else:
                self._end_open_line()
                self.stream.write(text + "\n")
            self.stream.flush()

    def _end_open_line(self) -> None:
        """End the line a step's output left open (the lock is held)."""
        if self._open_line is not None:
            self.stream.write("\n")
            self._open_line = None

    def start(self, name: str) -> int:
        with self._lock:
            self._counter += 1
            sid = self._counter
            self._started[sid] = time.monotonic()
            if self.journal is not None:  # in the order of the ids
                self.journal.append(["start", name])
        if self._tty is not None:
            self._tty.start(sid, name)
        else:
            self._emit(f"#{sid} {name}", event="start", id=sid, name=name)
        return sid

    def cached(self, sid: int) -> None:
        if self.journal is not None:
            self.journal.append(["cached", sid])
        self.steps_total += 1
        self.steps_cached += 1
        if self._tty is not None:
            return self._tty.finish(sid, "CACHED")
        self._emit(f"#{sid} CACHED", event="cached", id=sid)

    def done(self, sid: int) -> None:
        self._flush_output(sid)
        if self.journal is not None:
            self.journal.append(["done", sid])
        self.steps_total += 1
        if self._tty is not None:
            return self._tty.finish(sid, "DONE")
        elapsed = time.monotonic() - self._started.get(sid, time.monotonic())
        self._emit(f"#{sid} DONE {elapsed:.1f}s", event="done", id=sid, seconds=round(elapsed, 3))

    def internal_done(self, sid: int) -> None:
        if self.journal is not None:
            self.journal.append(["internal_done", sid])
        if self._tty is not None:
            return self._tty.finish(sid, "DONE")
        elapsed = time.monotonic() - self._started.get(sid, time.monotonic())
        self._emit(f"#{sid} DONE {elapsed:.1f}s", event="done", id=sid, seconds=round(elapsed, 3))

    def error(self, sid: int, message: str) -> None:
        self._flush_output(sid)
        if self.journal is not None:
            self.journal.append(["error", sid])
        if self._tty is not None:
            return self._tty.finish(sid, f"ERROR: {message}")
        self._emit(f"#{sid} ERROR: {message}", event="error", id=sid, message=message)

    def canceled(self, sid: int) -> None:
        """A step ended before it finished: the build stopped (a signal, or another step
        failed), as BuildKit marks the vertices of a cancelled solve."""
        self._flush_output(sid)
        if self.journal is not None:
            self.journal.append(["canceled", sid])
        if self._tty is not None:
            return self._tty.finish(sid, "CANCELED")
        self._emit(f"#{sid} CANCELED", event="canceled", id=sid)

    def output(self, sid: int, data: bytes) -> None:
        if self.journal is not None:
            self.journal.append(["output", sid])
        decoder = self._decoders.get(sid)
        if decoder is None:
            decoder = self._decoders[sid] = codecs.getincrementaldecoder("utf-8")("replace")
        self._show_output(sid, decoder.decode(data))

    def _flush_output(self, sid: int) -> None:
        """Show what the step's decoder still holds (a character cut short at its end)."""
        decoder = self._decoders.pop(sid, None)
        if decoder is not None:
            self._show_output(sid, decoder.decode(b"", final=True))

    def _show_output(self, sid: int, text: str) -> None:
        if not text:
            return
        if self._tty is not None:
            return self._tty.output(sid, text)
        if self.mode == "rawjson":
            self._emit("", event="output", id=sid, data=text)
            return
        elapsed = time.monotonic() - self._started.get(sid, time.monotonic())
        # Lines end at "\n" only: a "\r" (a progress bar) stays inside its line, as in BuildKit.
        pieces = text.split("\n")
        complete = pieces[-1] == ""
        if complete:
            pieces.pop()
        with self._lock:
            if self.mode == "quiet":
                return
            shown = []
            for i, piece in enumerate(pieces):
                if i == 0 and self._open_line == sid:
                    shown.append(piece)  # the rest of the line the last chunk began
                    continue
                if i == 0:
                    self._end_open_line()
                shown.append(f"#{sid} {elapsed:.3f} {piece}")
            self.stream.write("\n".join(shown) + ("\n" if complete else ""))
            self._open_line = None if complete else sid
            self.stream.flush()

    def warn(self, message: str) -> None:
        if self.journal is not None:
            self.journal.append(["warn", message])
        # A warning that already carries docker's own "[Warning]" prefix is shown as docker
        # shows it, so that what users (and their scripts) grep for is the same.
        text = message if message.startswith("[Warning]") else f"WARNING: {message}"
        self._emit(text, event="warning", message=message)

    def check(self, finding: Any) -> None:
        """A build check's finding (``builder.checks.Finding``), shown as buildx shows it
        under the Dockerfile's step: ``WARN: Rule: message (line N)``."""
        if self.journal is not None:
            self.journal.append(["check", finding.to_json()])
        self.findings.append(finding)
        self._emit(f"WARN: {finding.short}", event="warning", message=finding.short,
                   rule=finding.rule, detail=finding.message, line=finding.line)

    def finish(self) -> None:
        """End the display and, as buildx does when its printer closes, sum up the build
        checks' findings on stderr (not in quiet or rawjson mode)."""
        self.close()
        if not self.findings or self.mode in ("quiet", "rawjson"):
            return
        from .checks import summary_text

        lines, filename = self.source or ((), "Dockerfile")
        text = summary_text(self.findings, debug=self.debug, lines=lines if self.source else None,
                            filename=filename, color=_isatty(self.stream)
                            and not os.environ.get("NO_COLOR"))
        with self._lock:
            self.stream.write(text)
            self.stream.flush()

    def info(self, message: str) -> None:
        if self.journal is not None:
            self.journal.append(["info", message])
        self._emit(message, event="info", message=message)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
