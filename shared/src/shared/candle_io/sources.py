"""What a candle file is (CSV or Parquet; plain, gzip or zip), told by its bytes, not its name.

The readers stream the file through pyarrow; `open_byte_stream` also gives a function that
says how many bytes of the file on disk have been consumed, for a progress bar by bytes.
"""

from __future__ import annotations

import gzip
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import pyarrow as pa

from shared.candle_io.errors import CandleFileError

_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_ZIP_MAGIC = b"PK\x03\x04"

FileKind = Literal["csv", "parquet"]
Compression = Literal["none", "gzip", "zip"]

UNKNOWN_FORMAT = (
    "is not a candle file: expected a CSV (plain, gzip or zip: this project's format with a "
    "header, or Binance's 12-column kline CSV) or a Parquet file"
)


@dataclass(frozen=True)
class CandleSource:
    """A candle file on disk and how to read it."""

    path: Path
    kind: FileKind
    compression: Compression
    size: int
    """Bytes on disk; the progress of a CSV import is counted against it."""


def detect_source(path: Path) -> CandleSource:
    """Tell a file's format from its first bytes; raise `CandleFileError` if it is none of ours."""
    if not path.exists():
        raise CandleFileError(path, "no such file")
    if not path.is_file():
        raise CandleFileError(path, "is not a file")
    with path.open("rb") as file:
        head = file.read(4)
    size = path.stat().st_size
    if head.startswith(_GZIP_MAGIC):
        return CandleSource(path, "csv", "gzip", size)
    if head == _PARQUET_MAGIC:
        return CandleSource(path, "parquet", "none", size)
    if head == _ZIP_MAGIC:
        return CandleSource(path, "csv", "zip", size)
    return CandleSource(path, "csv", "none", size)


def _zip_member(archive: zipfile.ZipFile, path: Path) -> zipfile.ZipInfo:
    # Binance's archives hold exactly one CSV; anything else is ambiguous.
    members = [info for info in archive.infolist() if not info.is_dir()]
    if len(members) != 1:
        raise CandleFileError(path, f"zip archive holds {len(members)} files; expected one CSV")
    return members[0]


def read_first_line(source: CandleSource, limit: int = 4096) -> bytes:
    """The file's first line (decompressed), without its line ending."""
    try:
        if source.compression == "gzip":
            with gzip.open(source.path, "rb") as file:
                line = file.readline(limit)
        elif source.compression == "zip":
            with (
                zipfile.ZipFile(source.path) as archive,
                archive.open(_zip_member(archive, source.path)) as file,
            ):
                line = file.readline(limit)
        else:
            with source.path.open("rb") as file:
                line = file.readline(limit)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CandleFileError(source.path, f"cannot be read: {exc}") from None
    return line.rstrip(b"\r\n")


@contextmanager
def open_byte_stream(source: CandleSource) -> Iterator[tuple[pa.NativeFile, Callable[[], int]]]:
    """The decompressed bytes of a CSV file, and a function: bytes of the file consumed so far."""
    if source.compression == "zip":
        with zipfile.ZipFile(source.path) as archive:
            member = _zip_member(archive, source.path)
            with archive.open(member) as inner:
                yield (
                    pa.PythonFile(inner, mode="r"),
                    _scaled_position(inner, member.file_size, source.size),
                )
        return
    raw = pa.OSFile(str(source.path), mode="r")
    try:
        if source.compression == "gzip":
            with pa.CompressedInputStream(raw, "gzip") as stream:
                yield stream, raw.tell
        else:
            yield raw, raw.tell
    finally:
        raw.close()


def _scaled_position(inner: IO[bytes], inner_size: int, outer_size: int) -> Callable[[], int]:
    # A zip member's compressed position is not exposed; scale the uncompressed one instead.
    def position() -> int:
        return inner.tell() * outer_size // max(inner_size, 1)

    return position
