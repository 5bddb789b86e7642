#!/usr/bin/env python3
"""Batch driver for oracle_parse.py: one process answers many parses (tests stay fast).

Run with the oracle venv's interpreter. Reads JSON lines {"path": FILE} on stdin and writes
one JSON line per request: {"dump": TEXT} or {"error": MESSAGE}.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dockerfile
import oracle_parse


def main() -> int:
    for line in sys.stdin:
        path = json.loads(line)["path"]
        try:
            answer = {"dump": oracle_parse.dump_file(path)}
        except (dockerfile.GoParseError, dockerfile.GoIOError) as exc:
            answer = {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001  (the wrapper failed: report, keep serving)
            answer = {"crash": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
