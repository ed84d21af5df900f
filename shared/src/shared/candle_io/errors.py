"""The one error a candle file can raise: it names the file, the place and what is wrong."""

from __future__ import annotations

from pathlib import Path


class CandleFileError(ValueError):
    """A candle file cannot be read or holds a bad row; nothing of it is stored.

    `location` is "line 5012" for text files (1-based, the header counts) and "row 17" for
    Parquet files; it is empty for problems of the whole file (unknown format, missing file).
    """

    def __init__(self, path: Path | str, problem: str, location: str = "") -> None:
        self.path = Path(path)
        self.problem = problem
        self.location = location
        where = f"{self.path.name}: {location}: " if location else f"{self.path.name}: "
        super().__init__(where + problem)
