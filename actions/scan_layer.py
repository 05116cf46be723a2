"""Does the layer hold secrets? Scan its content with detect-secrets, defensively.

The archive is untrusted: the number of files and the total uncompressed bytes are
capped (zip bombs), each member is read with a byte limit whatever its header says,
names that climb out of the archive (``../``, absolute paths) are reported and never
written as given, and no secret value ever leaves this module: findings carry the file,
line, type and a masked hint only.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAX_MEMBER_BYTES = 5 * 1024 * 1024  # larger files are not source or config worth scanning
BINARY_SUFFIXES = {".so", ".pyc", ".pyo", ".png", ".jpg", ".jpeg", ".gif", ".zip", ".gz", ".jar", ".class", ".whl",
                   ".node", ".dll", ".exe", ".bin", ".pdf", ".woff", ".woff2", ".ttf", ".ico"}


@dataclass(frozen=True)
class Limits:
    max_uncompressed_bytes: int = 250 * 1024 * 1024
    max_files: int = 20_000


@dataclass(frozen=True)
class SecretFinding:
    path: str
    line: int
    type: str
    hint: str  # masked: never the value


@dataclass(frozen=True)
class SecretScan:
    findings: tuple[SecretFinding, ...]
    files_scanned: int
    problems: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        return bool(self.findings)


def mask(value: str) -> str:
    value = value or ""
    return f"{value[:2]}{'*' * 6} ({len(value)} characters)" if len(value) > 4 else f"****** ({len(value)} characters)"


def unsafe_name(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":")


def scan_layer_zip(data: bytes, limits: Limits = Limits()) -> SecretScan:
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return SecretScan((), 0, (f"not a readable zip archive: {exc}",))
    problems: list[str] = []
    if len(members) > limits.max_files:
        return SecretScan((), 0, (f"{len(members)} files, over the {limits.max_files}-file cap: not scanned "
                                  "(possible zip bomb)",))
    declared = sum(m.file_size for m in members)
    if declared > limits.max_uncompressed_bytes:
        return SecretScan((), 0, (f"{declared} bytes uncompressed, over the {limits.max_uncompressed_bytes}-byte cap: "
                                  "not scanned (possible zip bomb)",))

    findings: list[SecretFinding] = []
    scanned = 0
    total = 0
    with tempfile.TemporaryDirectory(prefix="layerguard-scan-") as tmp, default_settings():
        for member in members:
            name = member.filename
            if unsafe_name(name):
                problems.append(f"suspicious path in archive (escapes the layer root): {name[:200]!r}")
            if Path(name).suffix.lower() in BINARY_SUFFIXES or member.file_size > MAX_MEMBER_BYTES:
                continue
            try:
                with archive.open(member) as handle:
                    content = handle.read(MAX_MEMBER_BYTES + 1)
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
                problems.append(f"{name[:200]!r} could not be read: {exc}")
                continue
            total += len(content)
            if len(content) > MAX_MEMBER_BYTES or total > limits.max_uncompressed_bytes:
                problems.append(f"{name[:200]!r} inflates past its declared size: scan stopped (possible zip bomb)")
                break
            if b"\x00" in content[:8192]:
                continue  # binary
            # Written under a hashed name: the archive's own names are never used as paths.
            local = Path(tmp) / (hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:32] + ".txt")
            local.write_bytes(content)
            collection = SecretsCollection()
            collection.scan_file(str(local))
            scanned += 1
            for _, secret in collection:
                findings.append(SecretFinding(name, secret.line_number, secret.type, mask(secret.secret_value or "")))
    findings.sort(key=lambda f: (f.path, f.line, f.type))
    return SecretScan(tuple(findings), scanned, tuple(problems))
