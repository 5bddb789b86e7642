#!/usr/bin/env python3
"""Fuzz the Dockerfile parser: only BuildError subclasses may escape, and nothing may hang.

    python3 bench/fuzz_parser.py [--count 100000] [--seed 1] [--slow 1.0]

Inputs are the conformance Dockerfiles (fixtures/conformance) and a few extra seeds, mutated
at random (bytes inserted, deleted, repeated, replaced, tokens from a Dockerfile dictionary,
two files spliced), plus plain random bytes. Each input goes through ``parse_nodes`` + the
buildkit dump and ``parse_dockerfile``; an error's ``render()`` must be printable UTF-8.
Prints the count, how many were accepted or rejected, the slowest input and every finding
(anything else that escaped, or an input slower than --slow seconds). Exit status 1 if any.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.dump import dump_buildkit
from builder.errors import BuildError
from builder.parse import parse_dockerfile, parse_nodes

EXTRA_SEEDS = [
    b"# syntax=docker/dockerfile:1\n# escape=`\nFROM a AS b\nRUN echo `\n  hi\n",
    b"FROM a\nRUN <<EOF bash\necho $x\nEOF\nCOPY <<-'A' <<\"B\" /d/\n\tx\n\tA\ny\nB\n",
    b"FROM a\nONBUILD RUN --mount=type=cache,target=/c make\nHEALTHCHECK --interval=5s CMD [\"x\"]\n",
    b'FROM a\nENV A=1 B="2 3" C=\'4\'\nLABEL k=v "x y"=z\nARG V=${X:-y}\n',
    b"FROM a\nADD --checksum=sha256:00 --unpack=true https://x/y.tgz /\nSHELL [\"sh\", \"-c\"]\n",
]
TOKENS = [
    b"\\\n", b"`\n", b"\n", b"\r\n", b"<<EOF", b"<<-EOF", b"<<'EOF'", b"\nEOF\n", b"\tEOF\n",
    b'"', b"'", b"[", b"]", b'["a", "b"]', b"[1]", b"--", b"--from=", b"=", b"# escape=`\n",
    b"# escape=\\\n", b"# check=skip=all\n", b"\x00", b"\t", b"${", b"}", b"${x:-", b"$",
    b"ONBUILD ", b"FROM ", b"RUN ", b"COPY ", b"ENV ", b"HEALTHCHECK ", b" AS ", b"#", b"\xff",
    b"\xc3\xa9", "\u00a0".encode(), "\u2028".encode(), b"\xef\xbb\xbf", b"\\", b"`", b" ",
    b"[" * 50, b'"' * 20, b"\\" * 10,
]


def seeds() -> list[bytes]:
    base = ROOT / "fixtures" / "conformance" / "buildkit" / "parser"
    found = [p.read_bytes() for p in sorted(base.glob("**/Dockerfile"))]
    return found + EXTRA_SEEDS


def mutate(rnd: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.randrange(7)
        at = rnd.randint(0, len(buf))
        if op == 0:  # insert random bytes
            buf[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4)))
        elif op == 1 and buf:  # delete a span
            del buf[at:at + rnd.randint(1, 16)]
        elif op == 2 and buf:  # repeat a span
            span = buf[at:at + rnd.randint(1, 32)]
            buf[at:at] = span * rnd.randint(1, 8)
        elif op == 3 and buf:  # replace a byte
            buf[min(at, len(buf) - 1)] = rnd.randrange(256)
        elif op == 4:  # splice another file
            other = rnd.choice(pool)
            cut = rnd.randint(0, len(other))
            buf[at:] = other[cut:]
        else:  # a token a Dockerfile cares about
            buf[at:at] = rnd.choice(TOKENS)
    return bytes(buf)


def check(data: bytes) -> tuple[str, str | None]:
    """("accepted" | "rejected" | "crashed", the finding if the parser misbehaved)."""
    try:
        try:
            dump_buildkit(parse_nodes(data))
        except BuildError as exc:
            exc.render().encode("utf-8")
        try:
            parse_dockerfile(data)
            return "accepted", None
        except BuildError as exc:
            exc.render().encode("utf-8")
            return "rejected", None
    except Exception:  # noqa: BLE001  (the finding: anything but a BuildError)
        return "crashed", traceback.format_exc(limit=4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slow", type=float, default=1.0, help="seconds that count as a hang")
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    pool = seeds()
    outcomes: Counter[str] = Counter()
    findings: list[tuple[bytes, str]] = []
    slowest = (0.0, b"")
    started = time.perf_counter()
    for i in range(args.count):
        if i % 10 == 9:
            data = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 300)))
        else:
            data = mutate(rnd, rnd.choice(pool), pool)
        t0 = time.perf_counter()
        outcome, problem = check(data)
        took = time.perf_counter() - t0
        outcomes[outcome] += 1
        if took > slowest[0]:
            slowest = (took, data)
        if problem is not None:
            findings.append((data, problem))
        elif took > args.slow:
            # a busy machine can stall any process for a moment: slow twice is a finding
            t1 = time.perf_counter()
            check(data)
            again = time.perf_counter() - t1
            if again > args.slow:
                findings.append((data, f"slow: {took:.2f} s, then {again:.2f} s"))
        if (i + 1) % 20000 == 0:
            print(f"... {i + 1} inputs, {len(findings)} findings", file=sys.stderr)
    elapsed = time.perf_counter() - started
    print(f"inputs: {args.count} in {elapsed:.1f} s (seed {args.seed}); "
          f"accepted {outcomes['accepted']}, rejected with a BuildError {outcomes['rejected']}, "
          f"other exceptions {outcomes['crashed']}")
    print(f"slowest input: {slowest[0] * 1000:.1f} ms ({len(slowest[1])} bytes): "
          f"{slowest[1][:120]!r}")
    print(f"findings: {len(findings)}")
    for data, problem in findings[:20]:
        print("----", repr(data[:300]))
        print(problem)
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
