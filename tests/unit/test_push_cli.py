"""The store and registry commands' user errors (one sentence, exit 1, or 2 for usage; no
traceback), and docker's way of printing sizes and ages in `pybuild images`."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

from builder.images import created_ago, human_duration, human_size


def run(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {"PYBUILD_ROOT": str(tmp_path / "store"), "DOCKER_CONFIG": str(tmp_path / "docker"),
           "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "builder", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=60, check=False)


def test_user_errors_are_one_sentence(tmp_path: Path) -> None:
    cases = [
        (("push", "nothere:1"), 1, "no such image: nothere:1"),
        (("push", "Bad:Name"), 2, "invalid image name"),
        (("login", "r.example", "--password-stdin"), 2, "give the user name with -u USER"),
        (("login", "r.example", "-u", "me"), 2, "give the password on stdin"),
        (("tag", "nothere", "x"), 1, "no such image: nothere"),
        (("load", "-i", str(tmp_path / "none.tar")), 1, "no such file"),
        (("save", "nothere", "-o", str(tmp_path / "x.tar")), 1, "no such image"),
        (("build", "--push", str(tmp_path)), 2, "pushing needs a name"),
    ]
    for args, code, text in cases:
        proc = run(tmp_path, *args)
        assert proc.returncode == code, (args, proc.stderr)
        assert text in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert "Traceback" in run(tmp_path, "--debug", "push", "nothere:1").stderr


def test_login_to_an_unreachable_registry_names_it_without_the_password(tmp_path: Path) -> None:
    proc = run(tmp_path, "login", "127.0.0.1:9", "-u", "me", "--password-stdin", stdin="hunter2\n")
    assert proc.returncode == 1 and "login to 127.0.0.1:9 failed" in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout
    assert not (tmp_path / "docker" / "config.json").exists()


def test_docker_sizes_and_ages() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 4_261_237, 77_800_000, 1.5e9)] == [
        "0B", "999B", "1kB", "4.26MB", "77.8MB", "1.5GB"]
    assert [human_duration(s) for s in (0.5, 1, 30, 90, 600, 3600, 7200, 3 * 86400, 20 * 86400,
                                        100 * 86400, 3 * 365 * 86400)] == [
        "Less than a second", "1 second", "30 seconds", "About a minute", "10 minutes",
        "About an hour", "2 hours", "3 days", "2 weeks", "3 months", "3 years"]
    now = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    assert created_ago("2024-01-01T00:00:00.123456789Z", now) == "24 hours ago"
    assert created_ago("", now) == "N/A"
