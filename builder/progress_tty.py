"""The live terminal display of `--progress=tty` (and `auto` on a terminal), like buildx's.

Finished steps scroll up as permanent lines (`=> [stage] COPY . /app  0.3s`, `CACHED`,
`ERROR`); below them a live region, redrawn a few times a second, shows every running
step with its elapsed time and the last lines of its output. Steps of stages that run at
once appear together, each with its stage name.
"""
from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import IO

__all__ = ["TtyDisplay"]

TAIL_LINES = 6
REFRESH = 0.1


@dataclass
class _Step:
    """A step shown on the terminal: its name, start and last lines."""

    name: str
    started: float
    tail: list[str] = field(default_factory=list)
    partial: str = ""


class TtyDisplay:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._running: dict[int, _Step] = {}
        self._drawn = 0  # lines of the live region on screen now
        self._stop = threading.Event()
        # Started with the first step, not here: a build may still have to enter a user
        # namespace, which a process with a second thread cannot do.
        self._ticker: threading.Thread | None = None

    # -- events --------------------------------------------------------------------
    def start(self, sid: int, name: str) -> None:
        with self._lock:
            if self._ticker is None:
                self._ticker = threading.Thread(target=self._tick, name="pybuild-progress",
                                                daemon=True)
                self._ticker.start()
            self._running[sid] = _Step(name, time.monotonic())
            self._redraw()

    def finish(self, sid: int, status: str) -> None:
        """``status``: "DONE", "CACHED", "CANCELED" or "ERROR: ..."; the step becomes a
        permanent line."""
        with self._lock:
            step = self._running.pop(sid, None)
            if step is None:
                return
            elapsed = time.monotonic() - step.started
            if status == "DONE":
                line = f"=> {step.name}  {elapsed:.1f}s"
            elif status == "CACHED":
                line = f"=> CACHED {step.name}"
            elif status == "CANCELED":
                line = f"=> CANCELED {step.name}  {elapsed:.1f}s"
            else:
                line = f"=> ERROR {step.name}  {elapsed:.1f}s\n" + "\n".join(
                    f"   | {t}" for t in step.tail) + f"\n   {status}"
            self._clear()
            self.stream.write(self._fit(line) + "\n")
            self._redraw()

    def output(self, sid: int, data: str) -> None:
        with self._lock:
            step = self._running.get(sid)
            if step is None:
                return
            text = step.partial + data
            lines = text.split("\n")
            step.partial = lines.pop()
            step.tail.extend(line.rstrip("\r") for line in lines)
            del step.tail[:-TAIL_LINES]

    def message(self, text: str) -> None:
        with self._lock:
            self._clear()
            self.stream.write(text + "\n")
            self._redraw()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1)
        with self._lock:
            self._clear()
            self.stream.flush()

    # -- drawing ----------------------------------------------------------------------
    def _tick(self) -> None:
        while not self._stop.wait(REFRESH):
            with self._lock:
                if self._running:
                    self._redraw()

    def _fit(self, line: str) -> str:
        width = shutil.get_terminal_size((100, 24)).columns
        return "\n".join(part if len(part) <= width else part[: width - 1] + "…"
                         for part in line.split("\n"))

    def _clear(self) -> None:
        if self._drawn:
            # Up to the first line of the live region, then clear to the end of the screen.
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _redraw(self) -> None:
        self._clear()
        now = time.monotonic()
        lines: list[str] = []
        for step in self._running.values():
            lines.append(self._fit(f"=> {step.name}  {now - step.started:.1f}s"))
            tail = step.tail + ([step.partial] if step.partial else [])
            lines.extend(self._fit(f"   | {t}") for t in tail[-TAIL_LINES:])
        if lines:
            self.stream.write("\n".join(lines) + "\n")
        self._drawn = len(lines)
        self.stream.flush()
