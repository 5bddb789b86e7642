"""ADD's extras: local tar archives (extracted), URLs (downloaded) and git repositories.

* Archives are recognised by content, as BuildKit (moby's DecompressStream then one tar
  header): gzip, bzip2, xz, zstd or plain tar; a symlink or anything else is copied. They
  are extracted into the destination directory as moby's ``Untar`` (chrooted there):
  existing files are replaced, existing directories kept (their metadata taken from the
  archive), owners from the archive unless --chown, no whiteout processing, and the
  destination acts as ``/``: symlinks inside it resolve inside it and a ``..`` stops at
  it. A damaged archive fails where Go's tar reader fails.
* URLs are streamed to a scratch file (mode 0600, mtime from Last-Modified or 0), checked
  against ``--checksum``, named after the URL's last path component; never extracted
  unless ``--unpack``.
* Git sources (BuildKit's ParseGitRef forms) are checked out by ``builder.gitsource``.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from builder.context import clean_source, resolve_in_root
from builder.digest import CHUNK, Digest
from builder.dockerignore import go_clean
from builder.errors import ContextError
from builder.gitsource import GitRef, git_checkout, is_git_ref, parse_git_ref

if TYPE_CHECKING:
    import tarfile

    from builder.copy import _Copier

__all__ = ["GitRef", "classify_source", "extract_archive", "extract_if_archive", "fetch_url", "git_checkout",
           "is_archive", "parse_git_ref"]


# ---------------------------------------------------------------- classification


def classify_source(src: str) -> str:
    """``"git"``, ``"url"`` or ``"path"`` for an ADD source, as BuildKit decides."""
    if is_git_ref(src):
        return "git"
    return "url" if src.lower().startswith(("http://", "https://")) else "path"


# ---------------------------------------------------------------- archives


def _zstd_skippable(magic: bytes) -> bool:
    """A zstd stream may open with a skippable frame (magic 0x184D2A50-5F), which moby's
    compression.Detect also takes for zstd."""
    return len(magic) >= 4 and int.from_bytes(magic[:4], "little") & 0xFFFFFFF0 == 0x184D2A50


@contextmanager
def _decompressed(path: str) -> Iterator[IO[bytes]]:
    with open(path, "rb") as raw:
        magic = raw.read(6)
        raw.seek(0)
        # Each decompressor is loaded by the archive that needs it (every COPY imports
        # this module to classify its sources).
        if magic[:3] == b"\x1f\x8b\x08":
            import gzip

            stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb")
        elif magic[:3] == b"BZh":
            import bz2

            stream = bz2.BZ2File(raw, "rb")
        elif magic == b"\xfd7zXZ\x00":
            import lzma

            stream = lzma.LZMAFile(raw, "rb")
        elif magic[:4] == b"\x28\xb5\x2f\xfd" or _zstd_skippable(magic):
            import zstandard

            stream = zstandard.ZstdDecompressor().stream_reader(  # type: ignore[assignment]
                raw, read_across_frames=True)
        else:
            stream = raw
        try:
            yield stream
        finally:
            if stream is not raw:
                stream.close()


def is_archive(path: str) -> bool:
    """Whether ``path`` is a regular file holding a (possibly compressed) tar archive."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with _decompressed(path) as stream:
            head = stream.read(512)
        import tarfile  # an ADD of a local file only: every COPY loads this module

        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
        return True
    except Exception:  # any failure to read a tar header means "not an archive"
        return False


def extract_archive(path: str, dest: str) -> None:
    """Extract the (possibly compressed) tar archive ``path`` into the folder ``dest``, as
    ADD extracts one (owners kept where the process may set them)."""
    _extract(path, dest, chown=None, strict_owner=False)


def extract_if_archive(path: str, copier: _Copier, drel: str) -> bool:
    """Extract ``path`` into directory ``drel`` of the copier's root if it is an archive."""
    if not is_archive(path):
        return False
    # fsutil's MkdirAll(dest, 0755, chown): --chmod does not apply to the destination
    dest = copier.host(copier.ensure_dir(drel, perm=0o755))
    _extract(path, dest, chown=copier.chown, strict_owner=copier.is_root)
    return True


# moby's boundTime: a time before the epoch (or past Go's range) is set as the epoch.
_MAX_MTIME_NS = (1 << 63) - 1


def _extract(path: str, dest: str, *, chown: tuple[int, int] | None, strict_owner: bool) -> None:
    """moby's archive.Unpack run chrooted in ``dest``: names are cleaned against ``/``
    (``../x`` lands in ``dest/x``), links resolve inside it, a hard link entry's header
    sets its inode's owner, mode and time, and the archive's ``/`` entry sets ``dest``'s."""
    import tarfile

    archive = os.path.basename(path)
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    with _decompressed(path) as stream:
        tail = _Tail(stream)
        member: tarfile.TarInfo | None = None
        try:
            with tarfile.open(fileobj=tail, mode="r|") as tf:
                for member in tf:
                    _check_type(member, archive)
                    rel = _member_path(member)
                    if rel is None:
                        continue  # "./": the destination keeps its own metadata
                    host = _place(dest, rel, member, archive)
                    if member.isdir():
                        _create(tf, member, host, dest, strict_owner)
                        _set_owner(host, member, chown, strict_owner)
                        dirs.append((host, member))  # mode and times last: children change them
                        continue
                    if not _create(tf, member, host, dest, strict_owner):
                        continue
                    _set_owner(host, member, chown, strict_owner)
                    if member.islnk():
                        # moby sets the link's header on the inode unless the target is a symlink
                        tparent, _, tbase = clean_source(member.linkname).rpartition("/")
                        target = os.path.join(dest, resolve_in_root(dest, tparent), tbase)
                        if os.path.lexists(target) and not os.path.islink(target):
                            _set_meta(host, member)
                    else:
                        _set_meta(host, member)
        except ContextError:
            raise
        except Exception as err:  # noqa: BLE001 - tarfile's and the decompressors' errors
            if not _ended_in_padding(tail, member, err):
                raise _damaged(archive, member, err) from None
        else:
            _check_end(tail, tf, archive)
    for host, member in reversed(dirs):
        _set_meta(host, member)


def _damaged(archive: str, member: tarfile.TarInfo | None, err: Exception) -> ContextError:
    if isinstance(err, OSError) and err.strerror:
        name = member.name if member is not None else "?"
        return ContextError(f"ADD failed: extracting {archive!r}: {name}: {err.strerror}")
    return ContextError(f"ADD failed: archive {archive!r} is damaged: {err or type(err).__name__}")


def _check_type(member: tarfile.TarInfo, archive: str) -> None:
    import tarfile

    if member.type in tarfile.REGULAR_TYPES and member.type != tarfile.CONTTYPE:
        return
    if member.type in (tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                       tarfile.BLKTYPE, tarfile.FIFOTYPE):
        return
    raise ContextError(f"ADD failed: archive {archive!r}: unhandled tar header type {member.type[0]} "
                       f"({member.name!r})")


def _member_path(member: tarfile.TarInfo) -> str | None:
    """The entry's path below the destination ("" for the destination itself), or None
    for an entry moby skips: a name Go's filepath.Clean turns into "."."""
    name = member.name
    if name == "" and member.isdir():
        name = "/"  # tarfile strips a directory's trailing "/", so "/" arrives empty
    cleaned = go_clean(name)
    if cleaned == ".":
        return None
    return clean_source(cleaned)


def _place(dest: str, rel: str, member: tarfile.TarInfo, archive: str) -> str:
    """Make the entry's missing parents and clear what it replaces; its host path."""
    if rel == "":
        if not member.isdir():
            raise ContextError(f"ADD failed: archive {archive!r} holds {member.name!r}, "
                               "a non-directory in place of the destination")
        return dest
    parent, _, base = rel.rpartition("/")
    if parent:
        _mkdir_parents(dest, parent)
    host = os.path.join(dest, resolve_in_root(dest, parent), base) if parent else os.path.join(dest, base)
    try:
        existing = os.lstat(host)
    except (FileNotFoundError, NotADirectoryError):
        return host
    if not (stat.S_ISDIR(existing.st_mode) and member.isdir()):
        if stat.S_ISDIR(existing.st_mode):
            shutil.rmtree(host)
        else:
            os.unlink(host)
    return host


def _create(tf: tarfile.TarFile, member: tarfile.TarInfo, host: str, dest: str, strict: bool) -> bool:
    """moby's createTarFile without the metadata; False when a device node was skipped
    (an unprivileged build cannot make one)."""
    if member.isdir():
        if host != dest and not (os.path.isdir(host) and not os.path.islink(host)):
            os.mkdir(host, 0o700)
    elif member.isreg():
        src = tf.extractfile(member)
        assert src is not None
        with open(host, "xb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    elif member.issym():
        os.symlink(member.linkname, host)
    elif member.islnk():
        tparent, _, tbase = clean_source(member.linkname).rpartition("/")
        os.link(os.path.join(dest, resolve_in_root(dest, tparent), tbase), host, follow_symlinks=False)
    else:
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
        try:
            os.mknod(host, kind | (member.mode & 0o7777), os.makedev(member.devmajor, member.devminor))
        except PermissionError:
            if strict:
                raise
            return False
    return True


def _mkdir_parents(dest: str, parent: str) -> None:
    """moby's createImpliedDirectories: when the parent is missing, MkdirAll it (0755,
    root); a dangling link on the way fails, as mkdir on it does."""
    pparent, _, pbase = parent.rpartition("/")
    if os.path.lexists(os.path.join(dest, resolve_in_root(dest, pparent), pbase)):
        return  # whatever it is: a file there fails the entry's own creation
    done = ""
    for comp in parent.split("/"):
        lexical = os.path.join(dest, done, comp) if done else os.path.join(dest, comp)
        done = resolve_in_root(dest, f"{done}/{comp}" if done else comp)
        resolved = os.path.join(dest, done)
        if not os.path.lexists(lexical):
            os.mkdir(lexical, 0o755)
            os.chmod(lexical, 0o755)
        elif not os.path.isdir(resolved) or os.path.islink(resolved):
            raise ContextError(f"ADD failed: mkdir /{parent}: /{done} is not a directory")


def _set_owner(host: str, member: tarfile.TarInfo, chown: tuple[int, int] | None, strict: bool) -> None:
    uid, gid = chown if chown is not None else (member.uid, member.gid)
    try:
        os.lchown(host, uid, gid)
    except PermissionError:
        if strict:
            raise


def _set_meta(host: str, member: tarfile.TarInfo) -> None:
    for key, value in (member.pax_headers or {}).items():
        if key.startswith("SCHILY.xattr."):
            try:
                os.setxattr(host, key[13:], value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            except OSError:
                pass  # best effort, as BuildKit's BestEffortXattrs
    if not member.issym():
        os.chmod(host, member.mode & 0o7777)
    mtime_ns = int(member.mtime * 1_000_000_000)
    if not 0 <= mtime_ns <= _MAX_MTIME_NS:
        mtime_ns = 0
    os.utime(host, ns=(mtime_ns, mtime_ns), follow_symlinks=False)


class _Tail:
    """A read-only stream that counts what it gave and keeps the last bytes of it, so
    the archive's end can be judged as Go's tar reader judges it once tarfile stops."""

    KEEP = 1 << 16

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.total = 0
        self.eof = False
        self._keep = bytearray()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if size != 0 and not data:
            self.eof = True
        self.total += len(data)
        self._keep += data
        if len(self._keep) > 2 * self.KEEP:
            del self._keep[:-self.KEEP]
        return data

    def after(self, offset: int, count: int) -> bytes | None:
        """``count`` bytes from ``offset`` on (fewer at the end), or None if forgotten."""
        start = self.total - len(self._keep)
        if offset < start:
            return None
        have = bytes(self._keep[offset - start:])
        while len(have) < count and not self.eof:
            more = self.read(count - len(have))
            have += more
        return have[:count]


def _check_end(tail: _Tail, tf: tarfile.TarFile, archive: str) -> None:
    """tarfile stops quietly at a cut or unreadable header; Go's reader fails there. It
    ends cleanly at the end of the data, or at two zero blocks (one, then the end)."""
    rest = tail.after(tf.offset, 1024)
    if rest is None or not rest:
        return
    zero = bytes(512)
    if len(rest) < 512 or (rest[:512] == zero and 512 < len(rest) < 1024):
        raise ContextError(f"ADD failed: archive {archive!r} is damaged: unexpected EOF")
    if rest[:512] != zero or (len(rest) == 1024 and rest[512:] != zero):
        raise ContextError(f"ADD failed: archive {archive!r} is damaged: invalid tar header")


def _ended_in_padding(tail: _Tail, member: tarfile.TarInfo | None, err: Exception) -> bool:
    """Go's reader reads a cut in the padding after an entry's data as the archive's end."""
    import tarfile

    if member is None or not isinstance(err, tarfile.ReadError) or not tail.eof:
        return False
    return tail.total >= member.offset_data + (member.size if member.isreg() else 0)


# ---------------------------------------------------------------- URLs


def request_failure(err: Exception) -> str:
    """A requests error in a few words: the socket's own reason ("Connection refused",
    "Name or service not known") rather than urllib3's nested retry report."""
    text = str(err)
    m = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if m:
        return m.group(1).strip()
    if "timed out" in text.lower():
        return "timed out"
    return text


def fetch_url(url: str, scratch: os.PathLike[str] | str, *, checksum: str | None = None, timeout: float = 60.0) -> str:
    """Download ``url`` into ``scratch``; returns the file's name there."""
    import requests

    want: Digest | None = None
    if checksum:
        try:
            want = Digest.parse(checksum)
        except ValueError:
            raise ContextError(f"invalid checksum {checksum!r} for {url}: expected sha256:<64 hex digits>") from None
        if want.algorithm != "sha256":
            raise ContextError(f"unsupported checksum algorithm {want.algorithm!r} for {url}")
    try:
        base = unquote(urlsplit(url).path).rstrip("/").rpartition("/")[2]
    except ValueError as exc:  # "http://[bad": Go's url.Parse refuses it too
        raise ContextError(f"failed to load {url}: {exc}") from None
    name = base if base not in ("", ".", "..") else "__unnamed__"
    dest = os.path.join(os.fspath(scratch), name)
    h = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=timeout) as resp:
            if resp.status_code != 200:
                raise ContextError(f"failed to load {url}: invalid response status {resp.status_code}")
            last_modified = resp.headers.get("Last-Modified")
            tmp = dest + ".part"
            with open(tmp, "wb") as out:
                for chunk in resp.iter_content(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
    except requests.RequestException as err:
        raise ContextError(f"failed to load {url}: {request_failure(err)}") from None
    got = Digest.sha256(h.hexdigest())
    if want is not None and got != want:
        os.unlink(tmp)
        raise ContextError(f"digest mismatch for {url}: {got} (expected: {want})")
    os.replace(tmp, dest)
    os.chmod(dest, 0o600)
    # As BuildKit's http source: the time Last-Modified gives, else (none, or unparsable) 0.
    ts = 0.0
    if last_modified:
        try:
            import email.utils

            ts = email.utils.parsedate_to_datetime(last_modified).timestamp()
        except (TypeError, ValueError):
            pass
    os.utime(dest, (ts, ts))
    return name
