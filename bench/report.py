"""The benchmark's outputs: rows of results -> a Markdown table, a JSON file and a PNG bar
chart of the ratios. The PNG is drawn here (zlib + struct and a 3x5 pixel font), so the
suite needs nothing beyond the standard library to report.
"""
from __future__ import annotations

import json
import statistics
import struct
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["Row", "markdown_table", "write_json", "write_markdown", "write_png"]


@dataclass
class Row:
    """One workload in one mode: every builder's samples and the ratios taken run by run."""

    workload: str
    mode: str
    seconds: dict[str, list[float]] = field(default_factory=dict)   # builder -> per run
    peak_mb: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    target: float | None = None       # the ratio pybuild / (faster peer or reference) to meet
    against: str = "peer"             # what the target compares with: "peer" or a reference name

    def median(self, who: str) -> float | None:
        runs = self.seconds.get(who)
        return statistics.median(runs) if runs else None

    def peak(self, who: str) -> float | None:
        runs = self.peak_mb.get(who)
        return max(runs) if runs else None

    def ratio(self, other: str, who: str = "pybuild") -> float | None:
        """Median of the per-run ratios (runs are paired: same run index, same moment)."""
        mine, theirs = self.seconds.get(who), self.seconds.get(other)
        if not mine or not theirs:
            return None
        pairs = [a / b for a, b in zip(mine, theirs) if b > 0]
        return statistics.median(pairs) if pairs else None

    def others(self) -> list[str]:
        return [b for b in self.seconds if b != "pybuild"]

    def headline(self) -> tuple[str, float] | None:
        """The ratio the target is about: against the faster peer, or against the reference."""
        candidates = [o for o in self.others() if (self.against == "peer") != o.startswith("ref:")]
        if self.against != "peer":
            candidates = [o for o in candidates if o == self.against] or candidates
        ratios = [(o, r) for o in candidates if (r := self.ratio(o)) is not None]
        return max(ratios, key=lambda x: x[1]) if ratios else None

    def met(self) -> bool | None:
        head = self.headline()
        if head is None or self.target is None:
            return None
        return head[1] <= self.target


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(rows: Sequence[Row], memory_limit_mb: float) -> str:
    """Peers (buildah, docker) get columns; a reference (a raw pipeline, skopeo, cp -a)
    shares one "other" column, named in its cell."""
    peers = [p for p in ("buildah", "docker") if any(p in r.seconds for r in rows)]
    head = ["workload", "mode", "pybuild s", *[f"{p} s" for p in peers], "other s",
            *[f"pybuild/{p}" for p in peers], "pybuild/other", "target", "met",
            "pybuild peak MB", *[f"{p} peak MB" for p in peers]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        others = [o for o in row.seconds if o != "pybuild" and o not in peers]
        other = others[0] if others else None
        cells = [row.workload, row.mode, _fmt(row.median("pybuild")),
                 *[_fmt(row.median(p)) for p in peers],
                 f"{other.removeprefix('ref:')}: {_fmt(row.median(other))}" if other else "–",
                 *[_fmt(row.ratio(p)) for p in peers],
                 _fmt(row.ratio(other)) if other else "–"]
        head_ratio = row.headline()
        cells.append("–" if row.target is None or head_ratio is None
                     else f"≤ {row.target:g} vs {head_ratio[0].removeprefix('ref:')}")
        cells.append({True: "yes", False: "**no**", None: "–"}[row.met()])
        peak = row.peak("pybuild")
        text = _fmt(peak, 0)
        if peak is not None and peak > memory_limit_mb:
            text = f"**{text}**"
        cells.append(text)
        cells += [_fmt(row.peak(p), 0) for p in peers]
        if row.failed:
            cells[1] += " (failed: " + ", ".join(f"{k}×{v}" for k, v in row.failed.items()) + ")"
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, rows: Sequence[Row], meta: dict[str, object],
                   memory_limit_mb: float) -> None:
    text = [f"# pybuild benchmark ({meta.get('date')})", "",
            ("Whole-process wall time, median of "
             f"{meta.get('reps')} runs after a warm-up (each workload's first build; one more "
             "run for export and push); ratios are the median of per-run ratios pybuild/other "
             "(runs paired in time). Peak memory: largest process of the tree (ru_maxrss), "
             "plus dockerd/containerd growth for docker."),
            "", markdown_table(rows, memory_limit_mb), "", "Machine and versions:", ""]
    for key, value in dict(meta.get("versions", {})).items():  # type: ignore[call-overload]
        text.append(f"- {key}: {value}")
    _write(path, "\n".join(text) + "\n")


def write_json(path: Path, rows: Sequence[Row], meta: dict[str, object]) -> None:
    doc = {"meta": meta, "rows": [
        {**asdict(r), "median_s": {b: r.median(b) for b in r.seconds},
         "ratios": {b: r.ratio(b) for b in r.others()},
         "headline": r.headline(), "met": r.met()} for r in rows]}
    _write(path, json.dumps(doc, indent=2) + "\n")


def _write(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    part.replace(path)


# ------------------------------------------------------------------ PNG chart
# A 3x5 font: each glyph is five rows of three bits.
_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "/": "001001010100100",
    "-": "000000111000000", ":": "000010000010000", " ": "000000000000000", "<": "001010100010001",
    "=": "000111000111000", "x": "000101010101000", "(": "010100100100010", ")": "010001001001010",
    "a": "010101111101101", "b": "110101110101110", "c": "011100100100011", "d": "110101101101110",
    "e": "111100110100111", "f": "111100110100100", "g": "011100101101011", "h": "101101111101101",
    "i": "111010010010111", "j": "001001001101010", "k": "101101110101101", "l": "100100100100111",
    "m": "101111111101101", "n": "110101101101101", "o": "010101101101010", "p": "110101110100100",
    "q": "010101101110011", "r": "110101110101101", "s": "011100010001110", "t": "111010010010010",
    "u": "101101101101111", "v": "101101101101010", "w": "101101111111101", "y": "101101010010010",
    "z": "111001010100111", "_": "000000000000111", "+": "000010111010000",
}


class _Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.px = bytearray(b"\xff" * (width * height * 3))

    def rect(self, x0: int, y0: int, x1: int, y1: int, rgb: tuple[int, int, int]) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.w, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.h, max(y0, y1))
        line = bytes(rgb) * (x1 - x0)
        for y in range(y0, y1):
            at = (y * self.w + x0) * 3
            self.px[at:at + len(line)] = line

    def text(self, x: int, y: int, s: str, scale: int = 2, rgb: tuple[int, int, int] = (0, 0, 0)) -> None:
        for ch in s.lower():
            glyph = _FONT.get(ch, _FONT[" "])
            for i, bit in enumerate(glyph):
                if bit == "1":
                    gx, gy = x + (i % 3) * scale, y + (i // 3) * scale
                    self.rect(gx, gy, gx + scale, gy + scale, rgb)
            x += 4 * scale

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3])
                       for y in range(self.h))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(
                ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write_png(path: Path, rows: Sequence[Row]) -> None:
    """Horizontal bars of the headline ratio per row, a line at 1.0 and one at the target;
    green when the target is met, red when not (the scale is capped at 3x)."""
    bars = [(f"{r.workload} {r.mode}", h[1], r.target, h[0]) for r in rows if (h := r.headline())]
    label_w, bar_w, row_h, top = 300, 520, 22, 40
    canvas = _Canvas(label_w + bar_w + 90, top + row_h * max(1, len(bars)) + 30)
    canvas.text(10, 10, "pybuild time / faster peer or reference (lower is better)", 2)
    canvas.rect(label_w + bar_w - 60, 8, label_w + bar_w - 58, 22, (40, 40, 200))
    canvas.text(label_w + bar_w - 50, 10, "target", 2)
    cap = 3.0
    scale = bar_w / cap
    for i, (label, ratio, target, other) in enumerate(bars):
        y = top + i * row_h
        canvas.text(10, y + 5, label[:36], 2)
        good = target is None or ratio <= target
        canvas.rect(label_w, y + 3, label_w + int(min(ratio, cap) * scale), y + row_h - 3,
                    (60, 160, 80) if good else (200, 60, 60))
        if target is not None:
            tx = label_w + int(min(target, cap) * scale)
            canvas.rect(tx - 1, y, tx + 1, y + row_h, (40, 40, 200))
        canvas.text(label_w + int(min(ratio, cap) * scale) + 6, y + 5, f"{ratio:.2f}", 2)
    one = label_w + int(scale)
    canvas.rect(one, top - 4, one + 1, top + row_h * len(bars), (0, 0, 0))
    canvas.text(one - 6, top + row_h * len(bars) + 6, "1.0", 2)
    data = canvas.png()
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    part.replace(path)
