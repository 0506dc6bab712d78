"""Request safety for the HTTP service: bearer tokens, size limits, uploads that cannot escape or swell.

Uploaded incident archives are untrusted. They are read as a stream, one member at a time, and each
member is written to disk as it is decompressed, so memory stays small whatever the archive holds;
the member count, each member's size and the total size are checked while reading, and reading stops
at the first limit crossed. Members with absolute paths, `..` components, links, devices, or a path
that is both a file and a directory are refused, and extraction goes into a fresh directory the
service owns. Any failure removes that directory.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import hmac
import lzma
import os
import posixpath
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, NoReturn, cast

from flipmoe.errors import FlipmoeInputError

_CHUNK = 1 << 16
_TAR_BLOCK = 512
_MAX_NAME_BYTES = 1024
_MAX_PART_BYTES = 255

_CORRUPT = (EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError, tarfile.TarError, zipfile.BadZipFile,
            zipfile.LargeZipFile, NotImplementedError, UnicodeDecodeError)


def token_ok(header: str | None, tokens: frozenset[str]) -> bool:
    """`Authorization: Bearer <token>` matches one of `tokens` (compared in constant time)."""
    if not header or not header.startswith("Bearer "):
        return False
    given = header[len("Bearer "):].strip().encode()
    return any(hmac.compare_digest(given, t.encode()) for t in tokens)


def token_scope(header: str | None) -> str:
    """A short, one-way name for the caller's bearer token, so per-caller state never stores a token."""
    given = header[len("Bearer "):].strip() if header and header.startswith("Bearer ") else ""
    return hashlib.sha256(given.encode()).hexdigest()[:16] if given else "anonymous"


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


@dataclass(frozen=True, kw_only=True)
class ArchiveLimits:
    """What an uploaded archive may expand to."""

    max_bytes: int = 512 * 1024 * 1024
    """Total size of the extracted files."""
    max_member_bytes: int = 256 * 1024 * 1024
    """Size of any one extracted file."""
    max_members: int = 200
    """Files in the archive (directories are counted separately, against the same number)."""


class ArchiveTooLarge(FlipmoeInputError):
    """The archive expands beyond `ArchiveLimits.max_bytes`."""


def safe_member_path(name: str) -> PurePosixPath:
    """The relative path an archive member may be written to; refuses anything that leaves the target.

    `.` (the archive's root) comes back as `PurePosixPath(".")`, whose `parts` are empty.
    """
    if "\x00" in name:
        raise FlipmoeInputError(f"archive member {name!r} has a NUL byte in its name")
    normal = posixpath.normpath(name.replace("\\", "/"))
    path = PurePosixPath(normal)
    if path.is_absolute() or normal.startswith("../") or normal == ".." or (path.parts and ":" in path.parts[0]):
        raise FlipmoeInputError(f"archive member {name!r} points outside the incident directory")
    encoded = [os.fsencode(part) for part in path.parts]
    if sum(map(len, encoded)) > _MAX_NAME_BYTES or any(len(part) > _MAX_PART_BYTES for part in encoded):
        raise FlipmoeInputError(f"archive member name {name[:80]!r}... is too long")
    return path


def extract_incident_archive(source: IO[bytes], target: Path, *, limits: ArchiveLimits = ArchiveLimits()) -> Path:
    """Extract a .tar (plain, gzip, bzip2 or xz) or .zip of one incident directory into `target`.

    `source` is a seekable binary file holding the upload. Returns the incident directory: `target`, or
    its one top-level directory when the files are inside one. `target` must not exist; on any error it
    is removed again.
    """
    target.mkdir(parents=True, exist_ok=False)
    try:
        _Extraction(target, limits).run(source)
        return _incident_root(target)
    except (*_CORRUPT, _CorruptData) as err:
        shutil.rmtree(target, ignore_errors=True)
        raise FlipmoeInputError(f"the archive is truncated or corrupt ({_first_line(err)})") from None
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _incident_root(target: Path) -> Path:
    if (target / "incident.json").is_file():
        return target
    children = [p for p in target.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "incident.json").is_file():
        return children[0]
    raise FlipmoeInputError("the archive holds no incident.json (at its root or in one top-level directory)")


def _decompressing(source: IO[bytes], head: bytes) -> IO[bytes]:
    """`source`, or a reader that decompresses it, by its leading bytes (gzip, bzip2, xz)."""
    if head.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=source, mode="rb"))
    if head.startswith(b"BZh"):
        return cast(IO[bytes], bz2.BZ2File(source, "rb"))
    if head.startswith(b"\xfd7zXZ\x00"):
        return cast(IO[bytes], lzma.LZMAFile(source, "rb"))
    return source


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0][:160] if text else "") or type(err).__name__


class _Extraction:
    """One archive being written under `target`, with the running counts the limits apply to."""

    def __init__(self, target: Path, limits: ArchiveLimits) -> None:
        self.target, self.limits = target, limits
        self.total = 0
        self.files: set[PurePosixPath] = set()
        self.dirs: set[PurePosixPath] = set()

    def run(self, source: IO[bytes]) -> None:
        source.seek(0)
        head = source.read(8)
        source.seek(0)
        stream = _decompressing(source, head)
        if stream is source and zipfile.is_zipfile(source):
            source.seek(0)
            self._zip(source)
            return
        source.seek(0)
        # Headers, padding and end blocks around the members' data: bounded by the member counts.
        overhead = 4 * _TAR_BLOCK * (2 * self.limits.max_members + 8) + 20 * _TAR_BLOCK
        bounded = _Bounded(stream, self.limits.max_bytes + overhead, self._too_large)
        try:
            # "r|": a forward-only stream; members are read in order and never all held at once.
            archive = tarfile.open(fileobj=bounded, mode="r|")  # type: ignore[call-overload]
        except tarfile.ReadError:
            raise FlipmoeInputError("the upload is not a .tar, .tar.gz or .zip archive") from None
        with archive:
            for member in archive:
                self._tar_member(archive, member)

    def _tar_member(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        path = safe_member_path(member.name)
        if member.isdir():
            self._directory(path)
            return
        if not member.isfile():
            raise FlipmoeInputError(f"archive member {member.name!r} is not a regular file "
                                    "(links and devices are not accepted)")
        self._check_member(member.name, member.size)
        handle = archive.extractfile(member)
        assert handle is not None  # a regular file always has a reader
        self._write(path, member.name, _chunks(handle))

    def _zip(self, source: IO[bytes]) -> None:
        with zipfile.ZipFile(source) as archive:
            infos = archive.infolist()
            self._check_count(sum(not info.is_dir() for info in infos), "files")
            self._check_count(sum(info.is_dir() for info in infos), "directories")
            for info in infos:
                path = safe_member_path(info.filename)
                if info.is_dir():
                    self._directory(path)
                    continue
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise FlipmoeInputError(f"archive member {info.filename!r} is a link; links are not accepted")
                if info.flag_bits & 0x1:
                    raise FlipmoeInputError(f"archive member {info.filename!r} is encrypted; send it unencrypted")
                self._check_member(info.filename, info.file_size)
                with archive.open(info) as handle:
                    self._write(path, info.filename, _chunks(handle))

    def _directory(self, path: PurePosixPath) -> None:
        if not path.parts:  # "." or "./": the archive's root, which is `target` itself
            return
        self._claim_dirs(path, path)
        self._check_count(len(self.dirs), "directories")
        self.target.joinpath(*path.parts).mkdir(parents=True, exist_ok=True)

    def _claim_dirs(self, path: PurePosixPath, name: PurePosixPath) -> None:
        """Record `path` and its parents as directories; `name` is the member that needs them."""
        for parent in [path, *path.parents][:-1]:  # the last one is ".", the root
            if parent in self.files:
                raise FlipmoeInputError(f"archive member {str(name)!r} needs {str(parent)!r} to be a directory, "
                                        "but the archive also holds it as a file")
            self.dirs.add(parent)

    def _check_member(self, name: str, declared: int) -> None:
        self._check_count(len(self.files) + 1, "files")
        if declared > self.limits.max_member_bytes:
            raise FlipmoeInputError(f"archive member {name!r} is larger than {self.limits.max_member_bytes} bytes")
        if self.total + declared > self.limits.max_bytes:
            self._too_large()

    def _write(self, path: PurePosixPath, name: str, chunks: Iterator[bytes]) -> None:
        if not path.parts:
            raise FlipmoeInputError(f"archive member {name!r} names the archive's root, not a file")
        if path in self.dirs:
            raise FlipmoeInputError(f"archive member {name!r} is a file, but the archive also holds it as a "
                                    "directory")
        self._claim_dirs(path.parent, path)
        self.files.add(path)
        destination = self.target.joinpath(*path.parts)
        # Belt and braces: the resolved path must stay inside the target.
        root = self.target.resolve()
        if os.path.commonpath([destination.parent.resolve(), root]) != str(root):
            raise FlipmoeInputError(f"archive member {name!r} points outside the incident directory")
        destination.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with open(destination, "wb") as out:
            for chunk in chunks:
                written += len(chunk)
                self.total += len(chunk)
                # Declared sizes can lie (zip): the bytes actually written are what is limited.
                if written > self.limits.max_member_bytes:
                    raise FlipmoeInputError(f"archive member {name!r} is larger than "
                                            f"{self.limits.max_member_bytes} bytes")
                if self.total > self.limits.max_bytes:
                    self._too_large()
                out.write(chunk)

    def _check_count(self, count: int, what: str) -> None:
        if count > self.limits.max_members:
            raise FlipmoeInputError(f"the archive holds more than {self.limits.max_members} {what}; "
                                    f"at most {self.limits.max_members} are accepted")

    def _too_large(self) -> NoReturn:
        raise ArchiveTooLarge(f"the archive expands to more than {self.limits.max_bytes} bytes")


class _CorruptData(Exception):
    """Compressed data that does not decompress (the decompressors say so with a bare OSError)."""


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := _read(handle, _CHUNK):
        yield chunk


def _read(handle: IO[bytes], size: int) -> bytes:
    try:
        return handle.read(size)
    except _CORRUPT:
        raise
    except OSError as err:  # reading the spooled upload: only its content can be wrong
        raise _CorruptData(_first_line(err)) from None


class _Bounded:
    """A read-only stream that calls `exceeded` once more than `limit` bytes have been read from it.

    Decompression bombs are stopped here: tarfile never sees more bytes than the limits allow, whatever
    the compressed stream would expand to (a tar header announcing a huge pax record included).
    """

    def __init__(self, stream: IO[bytes], limit: int, exceeded: Callable[[], NoReturn]) -> None:
        self.stream, self.limit, self.exceeded, self.count = stream, limit, exceeded, 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.limit + 1 - self.count
        data = _read(self.stream, min(size, self.limit + 1 - self.count))
        self.count += len(data)
        if self.count > self.limit:
            self.exceeded()
        return data
