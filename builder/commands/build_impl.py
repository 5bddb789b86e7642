"""`pybuild build` without click: its options (one table, from which builder.commands.build
makes the click command), what it does with them (``run``), and ``fast_args``, which reads
the command lines that need nothing of click's (no --help, no error to report) exactly as
click would, so that a build does not import click at all (about 25 ms of every start: click,
gettext, locale, uuid, platform, datetime, difflib, and the command's 42 option objects).
Anything else it leaves to click, which then parses and reports as it always did."""
from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = ["OPTIONS", "Opt", "fast_args", "run"]


@dataclass(frozen=True, slots=True)
class Opt:
    """One option of `pybuild build`: its flags, the keyword it fills, and how its value is
    read. ``kind``: str, flag, choice (one of ``choices``), int, count (an int >= 0),
    positive (a float > 0), file (click.Path(dir_okay=False)), folder (file_okay=False)."""

    opts: tuple[str, ...]
    name: str
    kind: str = "str"
    choices: tuple[str, ...] = ()
    multiple: bool = False
    default: Any = None
    envvar: str | None = None
    metavar: str | None = None
    hidden: bool = False
    help: str | None = None


OPTIONS: tuple[Opt, ...] = (
    Opt(('-f', '--file'), 'dockerfile', metavar='PATH', help='Name of the Dockerfile (default: PATH/Dockerfile; - for stdin).'),
    Opt(('-t', '--tag'), 'tags', multiple=True, metavar='NAME[:TAG]', help='Name and optionally a tag for the image.'),
    Opt(('--build-arg',), 'build_args', multiple=True, metavar='NAME[=VALUE]', help='Set a build-time variable.'),
    Opt(('--target',), 'target', metavar='STAGE', help='Build only this stage and what it needs.'),
    Opt(('--no-cache',), 'no_cache', kind='flag', help='Do not use the cache.'),
    Opt(('--no-cache-filter',), 'no_cache_filter', multiple=True, metavar='STAGE', help='Do not use the cache for these stages.'),
    Opt(('--pull',), 'pull', kind='flag', help='Resolve base images again from their registry.'),
    Opt(('--label',), 'labels', multiple=True, metavar='KEY=VALUE', help='Set a label on the image.'),
    Opt(('--annotation',), 'annotations', multiple=True, metavar='[TYPE:]KEY=VALUE', help="Add an annotation to the image manifest (TYPE manifest, the default; manifest-descriptor: its entry in the index or index.json; index and index-descriptor: the image index of --platform A,B or --provenance, and its index.json entry; TYPE[PLATFORM] for one platform's)."),
    Opt(('--network',), 'network', kind='choice', choices=('default', 'none', 'host'), default='default', help='Network for RUN steps.'),
    Opt(('--secret',), 'secrets', multiple=True, metavar='id=ID,src=FILE|env=VAR', help='Secret to expose to RUN --mount=type=secret.'),
    Opt(('--ssh',), 'ssh', multiple=True, metavar='default|ID[=SOCKET]', help='SSH agent socket to expose to RUN --mount=type=ssh.'),
    Opt(('-o', '--output'), 'outputs', multiple=True, metavar='type=TYPE,dest=PATH', help='Output: oci, docker, local, tar (or a folder).'),
    Opt(('--push',), 'push', kind='flag', help='Push the image to its registry (as -o type=registry).'),
    Opt(('--provenance',), 'provenance', metavar='true|false|mode=min|max[,version=v0.2|v1]', help='Attach a SLSA provenance attestation, as BuildKit makes it (true is mode=max; version v0.2 unless told). Off by default: pybuild attaches none unless asked. An OCI archive or a push gets an image index with an attestation manifest; -o local/tar get provenance.json.'),
    Opt(('--sbom',), 'sbom', metavar='false', help='Only false (or 0) is taken: pybuild makes no SBOM attestation (no package scanner), and asking for one is an error.'),
    Opt(('--attest',), 'attests', multiple=True, metavar='type=provenance[,mode=min|max][,disabled=BOOL]', help="Attestation options, as buildx's (type=provenance with mode, version, builder-id, reproducible, filename, inline-only; type=sbom only disabled)."),
    Opt(('--load',), 'load', kind='flag', help="Keep the image in pybuild's store under its -t names, as buildx's --load puts it in docker's (never docker's store here). Without -o a build does that anyway, so nothing changes; beside -o it stores the image too (as -o type=image)."),
    Opt(('--iidfile',), 'iidfile', kind='file', help='Write the image ID to this file.'),
    Opt(('--metadata-file',), 'metadata_file', kind='file', help='Write build results as JSON to this file.'),
    Opt(('--progress',), 'progress', kind='choice', choices=('auto', 'tty', 'plain', 'quiet', 'rawjson'), default='auto', help='How to show progress.'),
    Opt(('--build-context',), 'build_contexts', multiple=True, metavar='NAME=VALUE', help='Extra named context (oci-layout://DIR[:TAG], docker-image://REF, a git repository or http(s) URL, or a folder).'),
    Opt(('--platform',), 'platform', metavar='PLATFORM', help='Target platform (os/arch[/variant]), or several, comma-separated, for one image index; a RUN step for another architecture needs an emulator (qemu-user-static).'),
    Opt(('-q', '--quiet'), 'quiet', kind='flag', help='Print only the image ID.'),
    Opt(('--root',), 'root', kind='folder', envvar='PYBUILD_ROOT', help='Store folder (default: $PYBUILD_ROOT or ~/.local/share/pybuild).'),
    Opt(('--compression',), 'compression', kind='choice', choices=('gzip', 'zstd', 'uncompressed'), default='gzip', help='Layer compression.'),
    Opt(('--compression-level',), 'compression_level', kind='int', help='Compression level.'),
    Opt(('--source-date-epoch',), 'source_date_epoch', kind='int', envvar='SOURCE_DATE_EPOCH', help='Clamp times to this Unix time (reproducible builds).'),
    Opt(('--insecure-registry',), 'insecure', multiple=True, metavar='HOST', help='Use plain HTTP or unverified TLS for this registry.'),
    Opt(('--add-host',), 'add_hosts', multiple=True, metavar='HOST:IP', help='Add a line to /etc/hosts of RUN steps (HOST=IP works too; host-gateway is 127.0.0.1, the host).'),
    Opt(('--shm-size',), 'shm_size', metavar='BYTES', help='Size of /dev/shm in RUN steps (e.g. 128m, 2g; default 64m).'),
    Opt(('--ulimit',), 'ulimits', multiple=True, metavar='NAME=SOFT[:HARD]', help="Resource limit for RUN steps, as docker's (e.g. nofile=1024:2048, nproc=512; -1 is unlimited)."),
    Opt(('--memory',), 'memory', metavar='BYTES', help='Memory limit for RUN steps (e.g. 512m).'),
    Opt(('--cpus',), 'cpus', kind='positive', help='CPU limit for RUN steps.'),
    Opt(('--jobs',), 'jobs', kind='count', default=0, help='Stages (and platforms) to build at once (default: CPUs).'),
    Opt(('--explain',), 'explain', kind='flag', help='Say why each step that missed the cache missed.'),
    Opt(('--check-reproducible',), 'check_reproducible', kind='flag', help='Build twice with --no-cache in fresh temporary stores (same SOURCE_DATE_EPOCH: the given one, else now) and report the first difference; exit 1 if the digests differ.'),
    Opt(('--cache-from',), 'cache_from', multiple=True, metavar='type=registry,ref=REF|type=local,src=DIR', help='Import build cache from a registry or an OCI layout (repeatable; a bare REF is type=registry).'),
    Opt(('--cache-to',), 'cache_to', multiple=True, metavar='type=registry,ref=REF|type=local,dest=DIR[,mode=min|max][,mounts=true]', help="Export the build cache (mode=max: every stage's steps; mounts=true: cache mounts too)."),
    Opt(('--allow',), 'allow', multiple=True, metavar='ENTITLEMENT', help='Grant an entitlement: security.insecure (RUN --security=insecure runs with every capability) or network.host (always granted).'),
    Opt(('--check',), 'check', kind='flag', help='Run the build checks only and print what they find (exit 1 if anything); build nothing.'),
    Opt(('--call',), 'call', kind='choice', choices=('build', 'check', 'outline', 'targets'), default='build', help="What to do with the Dockerfile: build it; check (as --check); targets: list its stages and their descriptions (the comment above each FROM that starts with the stage's name); outline is not implemented."),
    Opt(('--dry-run',), 'dry_run', kind='flag', hidden=True),
)

_BY_FLAG = {flag: opt for opt in OPTIONS for flag in opt.opts}
_NO = object()  # a value click would refuse (it then says why)
# Options whose run prints more than an image ID through ``echo``: left to click.
_CLICK_ONLY = ("check", "check_reproducible", "dry_run")


def fast_args(argv: Sequence[str]) -> dict[str, Any] | None:
    """The keywords click would pass for `pybuild [--debug ...] [build] ARGS`, or None when
    the line is anything else or click would refuse it (an unknown option, a missing or bad
    value, --help, ...): click then reads it and says what is wrong."""
    from ..cli import _COMMANDS, _GROUP_OPTIONS

    args = list(argv)
    i = 0
    while i < len(args) and args[i] == "--debug":
        i += 1
    if i == len(args) or args[i] in _GROUP_OPTIONS or (args[i] in _COMMANDS and args[i] != "build"):
        return None
    rest = args[i + 1:] if args[i] == "build" else args[i:]
    given: dict[str, list[str]] = {}
    positional: list[str] = []
    j = 0
    while j < len(rest):
        arg = rest[j]
        j += 1
        if arg == "--":
            positional.extend(rest[j:])
            break
        if arg[:1] != "-" or len(arg) == 1:
            positional.append(arg)
            continue
        if arg.startswith("--"):  # click: exact long names, `--name value` or `--name=value`
            flag, eq, value = arg.partition("=")
            opt = _BY_FLAG.get(flag)
            if opt is None or (eq and opt.kind == "flag"):
                return None
            if opt.kind != "flag" and not eq:
                if j == len(rest):
                    return None
                value, j = rest[j], j + 1
            given.setdefault(opt.name, []).append(value)
            continue
        for k, ch in enumerate(arg[1:], start=2):  # -q, -t NAME, -tNAME, -qt NAME
            opt = _BY_FLAG.get("-" + ch)
            if opt is None:
                return None
            if opt.kind == "flag":
                given.setdefault(opt.name, []).append("")
                continue
            if k < len(arg):
                value = arg[k:]
            elif j < len(rest):
                value, j = rest[j], j + 1
            else:
                return None
            given.setdefault(opt.name, []).append(value)
            break
    if len(positional) > 1:
        return None
    kw: dict[str, Any] = {"context": positional[0] if positional else "."}
    for opt in OPTIONS:
        values = given.get(opt.name)
        if values is None and opt.envvar and os.environ.get(opt.envvar):
            values = [os.environ[opt.envvar]]
        if opt.kind == "flag":
            kw[opt.name] = values is not None
            continue
        if values is None:
            kw[opt.name] = () if opt.multiple else opt.default
            continue
        converted = [_convert(opt, v) for v in values]
        if _NO in converted:
            return None
        kw[opt.name] = tuple(converted) if opt.multiple else converted[-1]
    if any(kw[name] for name in _CLICK_ONLY) or kw["call"] != "build":
        return None
    return kw


def _convert(opt: Opt, value: str) -> Any:
    """``value`` as click's type for ``opt`` gives it, or _NO where click would refuse it
    (or might: click decides those)."""
    try:
        if opt.kind == "choice":
            return value if value in opt.choices else _NO
        if opt.kind == "int":
            return int(value)
        if opt.kind == "count":
            return int(value) if int(value) >= 0 else _NO
        if opt.kind == "positive":
            return float(value) if float(value) > 0 else _NO
    except ValueError:
        return _NO
    if opt.kind in ("file", "folder"):
        # click.Path: a path that is not there is taken as it is; one that is must be of the
        # right type and readable.
        try:
            mode = os.stat(value).st_mode
        except OSError:
            return value
        wrong = stat.S_ISDIR(mode) if opt.kind == "file" else stat.S_ISREG(mode)
        return _NO if wrong or not os.access(value, os.R_OK) else value
    return value


def run(kw: Mapping[str, Any], *, debug: bool, echo: Callable[[str], Any]) -> int:
    """Build an image from a Dockerfile: what `pybuild build` does with its parsed options
    (``kw``, as click passes them); ``echo`` prints a line on stdout. The exit status."""
    from ..build import BuildRequest, run_build
    from ..buildflags import (
        parse_add_hosts,
        parse_annotations,
        parse_attestations,
        parse_bytes,
        parse_ulimits,
    )
    from ..graph import platform_args

    provenance = parse_attestations(kw["attests"], kw["provenance"], kw["sbom"])  # type: ignore[arg-type]
    build_args = _parse_kv_list(kw["build_args"], "--build-arg", env_fallback=True)  # type: ignore[arg-type]
    labels = _parse_kv_list(kw["labels"], "--label")  # type: ignore[arg-type]
    contexts = _parse_kv_list(kw["build_contexts"], "--build-context")  # type: ignore[arg-type]
    secrets = dict(_parse_secret(s) for s in kw["secrets"])  # type: ignore[union-attr]
    ssh = dict(_parse_ssh(s) for s in kw["ssh"])  # type: ignore[union-attr]
    outputs = [_parse_output(o) for o in kw["outputs"]]  # type: ignore[union-attr]
    if kw["push"]:
        outputs.append({"type": "registry"})
    if kw["load"] and outputs and not any(o.get("type") in ("image", "registry") for o in outputs):
        outputs.append({"type": "image"})  # as buildx adds its docker output beside the others
    for out in outputs:
        pushing = out.get("type") == "registry" or out.get("push") == "true"
        if pushing and not kw["tags"] and not out.get("name"):
            raise UsageError("pushing needs a name: give one with -t NAME[:TAG]")
    memory = parse_bytes(str(kw["memory"]), "--memory") if kw["memory"] else None
    shm_size = parse_bytes(str(kw["shm_size"]), "--shm-size") if kw["shm_size"] else 0
    _check_level(str(kw["compression"]), kw["compression_level"])  # type: ignore[arg-type]
    for option in ("iidfile", "metadata_file"):
        _check_parent(option, kw[option])  # type: ignore[arg-type]
    platforms = _parse_platforms(kw["platform"])  # type: ignore[arg-type]
    platform = platforms[0] if len(platforms) == 1 else None
    target = platform or platform_args()["BUILDPLATFORM"]
    annotations = parse_annotations(kw["annotations"], platforms or [target],  # type: ignore[arg-type]
                                    makes_index=len(platforms) > 1 or provenance is not None)
    request = BuildRequest(
        context=str(kw["context"]),
        dockerfile=kw["dockerfile"],  # type: ignore[arg-type]
        tags=tuple(kw["tags"]),  # type: ignore[arg-type]
        build_args=build_args,
        target=kw["target"],  # type: ignore[arg-type]
        platform=platform,
        platforms=platforms if len(platforms) > 1 else (),
        no_cache=bool(kw["no_cache"]),
        no_cache_filter=tuple(x for v in kw["no_cache_filter"] for x in str(v).split(",") if x),  # type: ignore[union-attr]
        pull=bool(kw["pull"]),
        labels=labels,
        network=str(kw["network"]),
        secrets=secrets,
        ssh=ssh,
        outputs=tuple(outputs),
        iidfile=kw["iidfile"],  # type: ignore[arg-type]
        metadata_file=kw["metadata_file"],  # type: ignore[arg-type]
        progress="quiet" if kw["quiet"] else str(kw["progress"]),
        build_contexts=contexts,
        root=kw["root"],  # type: ignore[arg-type]
        compression=str(kw["compression"]),
        compression_level=kw["compression_level"],  # type: ignore[arg-type]
        source_date_epoch=kw["source_date_epoch"],  # type: ignore[arg-type]
        insecure_registries=tuple(kw["insecure"]),  # type: ignore[arg-type]
        memory=memory,
        cpus=kw["cpus"],  # type: ignore[arg-type]
        jobs=int(kw["jobs"] or 0),  # type: ignore[arg-type]
        allow=_parse_allow(kw["allow"]),  # type: ignore[arg-type]
        extra_hosts=parse_add_hosts(kw["add_hosts"]),  # type: ignore[arg-type]
        shm_size=shm_size or None,  # 0, as in buildx: the default size
        ulimits=parse_ulimits(kw["ulimits"]),  # type: ignore[arg-type]
        annotations=annotations,
        provenance=provenance,
    )
    request = replace(request, explain=bool(kw["explain"]), dry_run=bool(kw["dry_run"]), debug=debug)
    request = replace(request, cache_from=tuple(_parse_cache(t, export=False) for t in kw["cache_from"]),  # type: ignore[union-attr]
                      cache_to=tuple(_parse_cache(t, export=True) for t in kw["cache_to"]))  # type: ignore[union-attr]
    if kw["check"] or kw["call"] == "check":
        from ..buildcheck import run_check

        return run_check(request)
    if kw["call"] == "targets":
        from ..buildcheck import run_targets

        return run_targets(request)
    if kw["call"] == "outline":
        raise UsageError("--call outline is not implemented by pybuild (targets, check and build are)")
    if kw["check_reproducible"]:
        from ..reproducible import check_reproducible, not_reproducible, report_lines

        report = check_reproducible(request)
        if not report.reproducible:
            raise not_reproducible(report)
        for line in report_lines(report):
            echo(line)
        return 0
    result = run_build(request)
    if request.dry_run:
        for line in result.metadata.get("pybuild.plan", ()):
            echo(line)
        sys.stderr.write(result.summary + "\n")
        return 0
    if kw["quiet"]:
        echo(str(result.image_id))
    else:
        sys.stderr.write(result.summary + "\n")
    return 0


def _parse_kv_list(values: tuple[str, ...], what: str, *, env_fallback: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid {what} {item!r}: expected NAME=VALUE")
        if not sep:
            if env_fallback:
                env = os.environ.get(key)
                if env is None:
                    continue  # as docker: `--build-arg NAME` with NAME unset is ignored
                value = env
            else:
                raise UsageError(f"invalid {what} {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _parse_csv_opts(text: str) -> dict[str, str]:
    import csv

    out: dict[str, str] = {}
    for field in next(csv.reader([text]), []):
        k, sep, v = field.partition("=")
        out[k.strip().lower()] = v if sep else ""
    return out


def _parse_secret(text: str) -> tuple[str, tuple[str, str]]:
    opts = _parse_csv_opts(text)
    sid = opts.get("id")
    if not sid:
        raise UsageError(f"invalid --secret {text!r}: id= is required")
    if "env" in opts:
        return sid, ("env", opts["env"])
    src = opts.get("src") or opts.get("source")
    if src:
        if not Path(src).is_file():
            raise UsageError(f"--secret {sid}: file {src} not found")
        return sid, ("file", str(Path(src).resolve()))
    if sid in os.environ:
        return sid, ("env", sid)
    raise UsageError(f"invalid --secret {text!r}: give src=FILE or env=VAR")


def _parse_platforms(value: str | None) -> tuple[str, ...]:
    """--platform: one platform or several (comma-separated), normalised as BuildKit names
    them (``linux/arm64``); ``local`` is this machine."""
    if not value:
        return ()
    from ._store import platform_value

    out: list[str] = []
    for word in (w.strip() for w in value.split(",")):
        if not word:
            raise UsageError(f"--platform {value}: an empty platform",
                             hint="give os/arch[/variant], several separated by commas")
        platform = platform_value(word)
        if platform in out:
            raise UsageError(f"--platform names {platform} twice")
        out.append(platform)  # type: ignore[arg-type]
    return tuple(out)


def _parse_allow(values: tuple[str, ...]) -> tuple[str, ...]:
    """buildx's --allow: entitlements, comma-separated or repeated."""
    out = []
    for value in values:
        for word in value.split(","):
            word = word.strip()
            if word not in ("security.insecure", "network.host"):
                raise UsageError(f"invalid entitlement: {word}",
                                 hint="pybuild knows security.insecure and network.host")
            out.append(word)
    return tuple(out)


def _check_level(compression: str, level: int | None) -> None:
    """A compression level the compressor would refuse fails now, not after the build."""
    from ..errors import LayerError
    from ..layers.compress import check_level

    if level is not None:
        try:
            check_level(compression, level)
        except LayerError as exc:
            raise UsageError(f"--compression-level {level}: {exc.message}") from None


def _check_parent(option: str, path: str | None) -> None:
    """A file written after the build must have a folder to go in before the build starts."""
    if path and path != "-":
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise UsageError(f"--{option.replace('_', '-')} {path}: the folder {parent} does not exist")


def _parse_ssh(text: str) -> tuple[str, str]:
    """buildx's `--ssh default|ID[=SOCKET]`: `default` alone forwards $SSH_AUTH_SOCK."""
    import stat

    sid, sep, paths = text.partition("=")
    if not sid:
        raise UsageError(f"invalid --ssh {text!r}: expected default or ID[=SOCKET]")
    path = paths.split(",")[0] if sep else os.environ.get("SSH_AUTH_SOCK", "")
    if not path:
        raise UsageError(f"--ssh {sid}: SSH_AUTH_SOCK is not set",
                         hint="start an agent (eval $(ssh-agent)) or name a socket: --ssh ID=SOCKET")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise UsageError(f"--ssh {sid}: {path} not found") from None
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"--ssh {sid}: {path} is not a socket",
                         hint="pybuild forwards agent sockets; load keys into ssh-agent with ssh-add")
    return sid, os.path.abspath(path)


def _parse_output(text: str) -> dict[str, str]:
    if "=" not in text and "," not in text:
        # `-o DIR` is `type=local,dest=DIR`; `-o -` is a tar on stdout.
        return {"type": "tar", "dest": "-"} if text == "-" else {"type": "local", "dest": text}
    opts = _parse_csv_opts(text)
    kind = opts.get("type")
    if kind not in ("oci", "docker", "local", "tar", "image", "registry"):
        raise UsageError(f"invalid --output {text!r}: type must be oci, docker, local, tar, image or registry")
    if kind in ("oci", "docker", "local", "tar") and not opts.get("dest"):
        raise UsageError(f"invalid --output {text!r}: dest= is required for type={kind}")
    return opts


def _parse_cache(text: str, *, export: bool) -> dict[str, str]:
    """A --cache-from/--cache-to value as buildx reads it (a bare REF is type=registry),
    checked now so that a typo fails before the build."""
    from ..cache.remote import parse_cache_spec

    opts = _parse_csv_opts(text) if "=" in text else {"type": "registry", "ref": text}
    parse_cache_spec(opts, export=export)
    return opts
