"""Request safety for the HTTP service: bearer tokens, size limits, uploads that cannot escape.

Uploaded incident archives are untrusted: members with absolute paths, `..` components, links,
devices, too many members or too many bytes are refused before anything is written, and extraction
goes into a fresh directory the service owns.
"""

from __future__ import annotations

import hmac
import io
import os
import posixpath
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from flipmoe.errors import FlipmoeInputError


def token_ok(header: str | None, tokens: frozenset[str]) -> bool:
    """`Authorization: Bearer <token>` matches one of `tokens` (compared in constant time)."""
    if not header or not header.startswith("Bearer "):
        return False
    given = header[len("Bearer "):].strip().encode()
    return any(hmac.compare_digest(given, t.encode()) for t in tokens)


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def safe_member_path(name: str) -> PurePosixPath:
    """The relative path an archive member may be written to; refuses anything that leaves the target."""
    normal = posixpath.normpath(name.replace("\\", "/"))
    path = PurePosixPath(normal)
    if path.is_absolute() or normal.startswith("../") or normal == ".." or ":" in path.parts[0]:
        raise FlipmoeInputError(f"archive member {name!r} points outside the incident directory")
    return path


def extract_incident_archive(data: bytes, target: Path, *, max_bytes: int, max_members: int = 200) -> Path:
    """Extract a .tar, .tar.gz or .zip of one incident directory into `target`; returns the incident dir.

    The archive may hold the files at its root or inside one top-level directory.
    """
    members = _read_members(data, max_bytes=max_bytes, max_members=max_members)
    target.mkdir(parents=True, exist_ok=False)
    for relative, content in members:
        destination = target.joinpath(*relative.parts)
        # Belt and braces: the resolved path must stay inside the target.
        if os.path.commonpath([destination.resolve(), target.resolve()]) != str(target.resolve()):
            raise FlipmoeInputError(f"archive member {relative} points outside the incident directory")
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(content)
    if (target / "incident.json").is_file():
        return target
    children = [p for p in target.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "incident.json").is_file():
        return children[0]
    raise FlipmoeInputError("the archive holds no incident.json (at its root or in one top-level directory)")


def _read_members(data: bytes, *, max_bytes: int, max_members: int) -> list[tuple[PurePosixPath, bytes]]:
    members: list[tuple[PurePosixPath, bytes]] = []
    total = 0
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as zip_archive:
            infos = [i for i in zip_archive.infolist() if not i.is_dir()]
            _check_count(len(infos), max_members)
            for info in infos:
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise FlipmoeInputError(f"archive member {info.filename!r} is a link; links are not accepted")
                total += info.file_size
                _check_size(total, max_bytes)
                members.append((safe_member_path(info.filename), zip_archive.read(info)))
        return members
    try:
        tar_archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except tarfile.TarError:
        raise FlipmoeInputError("the upload is not a .tar, .tar.gz or .zip archive") from None
    with tar_archive:
        tar_members = [m for m in tar_archive.getmembers() if not m.isdir()]
        _check_count(len(tar_members), max_members)
        for member in tar_members:
            if not member.isfile():
                raise FlipmoeInputError(f"archive member {member.name!r} is not a regular file "
                                        "(links and devices are not accepted)")
            total += member.size
            _check_size(total, max_bytes)
            handle = tar_archive.extractfile(member)
            members.append((safe_member_path(member.name), handle.read() if handle else b""))
    return members


def _check_count(count: int, max_members: int) -> None:
    if count > max_members:
        raise FlipmoeInputError(f"the archive holds {count} files; at most {max_members} are accepted")


def _check_size(total: int, max_bytes: int) -> None:
    if total > max_bytes:
        raise FlipmoeInputError(f"the archive expands to more than {max_bytes} bytes")
