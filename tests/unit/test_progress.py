"""The progress displays: plain lines, raw JSON events, and the live terminal display."""
from __future__ import annotations

import io
import json
import re
import time

from builder.progress import Progress

_ANSI = re.compile(r"\x1b\[\d*[A-Za-z]")


def _screen(text: str) -> list[str]:
    """What a terminal shows at the end: apply the cursor-up + clear sequences."""
    lines: list[str] = []
    for token in re.split(r"(\x1b\[\d+F\x1b\[J)", text):
        m = re.match(r"\x1b\[(\d+)F\x1b\[J", token)
        if m:
            del lines[len(lines) - int(m.group(1)):]
        else:
            lines.extend(token.split("\n")[:-1] if token.endswith("\n") else token.split("\n"))
    return [line for line in lines if line]


def test_tty_display_keeps_finished_steps_and_clears_the_live_region() -> None:
    out = io.StringIO()
    progress = Progress("tty", out)
    run = progress.start("[build] RUN make")
    progress.output(run, b"compiling a\ncompiling b\n")
    copy = progress.start("[other] COPY . /app")
    progress.cached(copy)
    time.sleep(0.25)  # the ticker redraws the running step with its elapsed time
    assert any(line.startswith("   | compiling b") for line in _screen(out.getvalue()))
    progress.done(run)
    progress.close()
    screen = _screen(out.getvalue())
    assert screen[0] == "=> CACHED [other] COPY . /app"
    assert re.fullmatch(r"=> \[build\] RUN make  \d+\.\ds", screen[1])
    assert len(screen) == 2  # the running step's output is gone with its live region


def test_tty_error_keeps_the_last_output_lines() -> None:
    out = io.StringIO()
    progress = Progress("tty", out)
    sid = progress.start("[app] RUN false")
    progress.output(sid, b"why it failed\n")
    progress.error(sid, "exit code 1")
    progress.close()
    screen = _screen(out.getvalue())
    assert screen[0].startswith("=> ERROR [app] RUN false")
    assert "   | why it failed" in screen
    assert "   ERROR: exit code 1" in screen


def test_plain_and_rawjson() -> None:
    out = io.StringIO()
    progress = Progress("plain", out)
    sid = progress.start("[s] RUN echo hi")
    progress.output(sid, b"hi\n")
    progress.done(sid)
    lines = out.getvalue().splitlines()
    assert lines[0] == "#1 [s] RUN echo hi"
    assert re.fullmatch(r"#1 \d+\.\d{3} hi", lines[1])
    assert re.fullmatch(r"#1 DONE \d+\.\ds", lines[2])
    assert not _ANSI.search(out.getvalue())

    raw = io.StringIO()
    progress = Progress("rawjson", raw)
    sid = progress.start("[s] COPY a b")
    progress.cached(sid)
    events = [json.loads(line) for line in raw.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["start", "cached"]
    assert events[0]["name"] == "[s] COPY a b"


def test_auto_is_plain_when_not_a_terminal() -> None:
    assert Progress("auto", io.StringIO()).mode == "plain"


def test_tty_display_starts_no_thread_before_the_first_step() -> None:
    # A rootless build enters its user namespace after making the display: one thread only.
    import threading

    before = threading.active_count()
    progress = Progress("tty", io.StringIO())
    assert threading.active_count() == before
    progress.close()


def test_plain_continues_a_line_cut_across_chunks() -> None:
    # As BuildKit's plain printer: output is cut into lines at "\n" only, a chunk that ends
    # mid-line is continued by the next one, and a character cut in two stays whole.
    out = io.StringIO()
    progress = Progress("plain", out)
    sid = progress.start("[s] RUN make")
    for chunk in (b"a", b"b\n", b"Reading... ", b"Done\nd\xc3", b"\xa9j\xc3\xa0 vu\n", b"50%\r100%\n",
                  b"no newline at the end"):
        progress.output(sid, chunk)
    other = progress.start("[t] RUN x")
    progress.output(other, b"open")
    progress.output(sid, b" and more\n")
    progress.error(other, "exit code: 1")
    progress.done(sid)
    lines = [re.sub(r"^(#\d) \d+\.\d{3} ", r"\1 T ", line) for line in out.getvalue().split("\n")]
    assert lines[1:10] == ["#1 T ab", "#1 T Reading... Done", "#1 T déjà vu", "#1 T 50%\r100%",
                           "#1 T no newline at the end", "#2 [t] RUN x", "#2 T open",
                           "#1 T  and more", "#2 ERROR: exit code: 1"]
    assert re.fullmatch(r"#1 DONE \d+\.\ds", lines[10]) and lines[11:] == [""]
