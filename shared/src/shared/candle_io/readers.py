"""Stream a candle file as batches of raw columns, each row tagged with its line (or row) number.

Two layouts are read, both in Binance's column order: this project's CSV (a header, 11
columns) and Binance's raw kline CSV from its public archives (no header, 12 columns, the
last one unused). A CSV with a header may have its columns in any order; Parquet files are
read by column name. Values stay as they are in the file (text for CSV) so prices can become
exact Decimals; `validation.py` converts and checks them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from shared.candle_io.errors import CandleFileError
from shared.candle_io.sources import (
    UNKNOWN_FORMAT,
    CandleSource,
    open_byte_stream,
    read_first_line,
)

CANDLE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
)
"""This project's CSV header (../shared/data), which is also Binance's kline column order."""

BINANCE_KLINE_COLUMNS = (*CANDLE_COLUMNS, "ignore")
"""Binance's raw kline CSV: the same eleven columns and an unused twelfth."""

REQUIRED_COLUMNS = ("open_time", "open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS = ("close_time", "quote_volume", "trades")
USED_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

# Other spellings of our columns seen in Binance's own files and tools.
_ALIASES = {
    "open time": "open_time",
    "opentime": "open_time",
    "close time": "close_time",
    "closetime": "close_time",
    "quote_asset_volume": "quote_volume",
    "count": "trades",
    "number_of_trades": "trades",
    "num_trades": "trades",
}

DEFAULT_BLOCK_BYTES = 4 << 20
PARQUET_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class RawBatch:
    """Rows of a file as read, before any check.

    `columns` holds the used columns present in the file, by our names. Row `i` is at
    `location_word` number `first_location + i` in the file. `position` is how far the
    file has been read, in the unit of `CandleReader.total`.
    """

    columns: dict[str, pa.Array]
    first_location: int
    location_word: str
    position: int

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.columns.values())))


def _canonical(name: str) -> str:
    cleaned = name.strip().strip('"').strip().lower()
    return _ALIASES.get(cleaned, cleaned)


class CandleReader:
    """Reads one candle file in batches. `total` and `unit` describe the progress scale."""

    def __init__(self, source: CandleSource, *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        self.source = source
        self.block_bytes = block_bytes
        # The layout is read now, so a file of the wrong kind fails before any work starts.
        if source.kind == "parquet":
            self.unit = "rows"
            self.total = self._parquet_rows()
        else:
            self.unit = "bytes"
            self.total = source.size
            self._names, self._header_lines = self._csv_layout()

    def batches(self) -> Iterator[RawBatch]:
        """The file's rows, batch by batch; raises `CandleFileError` on malformed input."""
        if self.source.kind == "parquet":
            return self._parquet_batches()
        return self._csv_batches()

    # -- CSV ---------------------------------------------------------------------------

    def _csv_layout(self) -> tuple[list[str], int]:
        """Column names and the number of header lines (0 or 1)."""
        path = self.source.path
        first = read_first_line(self.source)
        try:
            text = first.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise CandleFileError(path, UNKNOWN_FORMAT) from None
        fields = text.split(",")
        if not text or len(fields) < len(REQUIRED_COLUMNS):
            raise CandleFileError(path, UNKNOWN_FORMAT)
        if fields[0].strip().lstrip("-").isdigit():
            if len(fields) == len(CANDLE_COLUMNS):
                return list(CANDLE_COLUMNS), 0
            if len(fields) == len(BINANCE_KLINE_COLUMNS):
                return list(BINANCE_KLINE_COLUMNS), 0
            raise CandleFileError(
                path,
                f"found {len(fields)} columns and no header; expected a header line, or the "
                f"{len(BINANCE_KLINE_COLUMNS)} columns of Binance's kline CSV",
                "line 1",
            )
        names = [_canonical(field) for field in fields]
        missing = [column for column in REQUIRED_COLUMNS if column not in names]
        if missing:
            raise CandleFileError(
                path,
                f"header lacks {', '.join(missing)}; expected {','.join(CANDLE_COLUMNS)}",
                "line 1",
            )
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise CandleFileError(path, f"header repeats {', '.join(duplicated)}", "line 1")
        return names, 1

    def _csv_batches(self) -> Iterator[RawBatch]:
        path = self.source.path
        names, header_lines = self._names, self._header_lines
        used = [name for name in names if name in USED_COLUMNS]
        bad_rows: list[pa_csv.InvalidRow] = []

        def on_invalid_row(row: pa_csv.InvalidRow) -> str:
            bad_rows.append(row)
            return "error"

        read_options = pa_csv.ReadOptions(
            use_threads=False,  # keeps physical row numbers known to the invalid-row handler
            block_size=self.block_bytes,
            column_names=names,
            skip_rows=header_lines,
        )
        # Empty lines come through as all-null rows so that row i stays on line i.
        parse_options = pa_csv.ParseOptions(
            ignore_empty_lines=False, invalid_row_handler=on_invalid_row
        )
        convert_options = pa_csv.ConvertOptions(
            column_types=dict.fromkeys(used, pa.string()),
            include_columns=used,
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        )
        next_line = header_lines + 1
        with open_byte_stream(self.source) as (stream, position):
            try:
                reader = pa_csv.open_csv(
                    stream,
                    read_options=read_options,
                    parse_options=parse_options,
                    convert_options=convert_options,
                )
                for batch in reader:
                    if batch.num_rows == 0:
                        continue
                    columns = {name: batch.column(name) for name in used}
                    yield RawBatch(columns, next_line, "line", position())
                    next_line += batch.num_rows
            except pa.ArrowInvalid as exc:
                raise self._csv_error(exc, bad_rows, len(names)) from None
            except (OSError, EOFError) as exc:
                raise CandleFileError(path, f"cannot be read: {exc}") from None

    def _csv_error(
        self,
        exc: pa.ArrowInvalid,
        bad_rows: list[pa_csv.InvalidRow],
        expected: int,
    ) -> CandleFileError:
        path = self.source.path
        if not bad_rows:
            return CandleFileError(path, f"is not a valid CSV: {exc}")
        row = bad_rows[0]
        # pyarrow's row number is the physical line, skipped header included.
        where = f"line {row.number}" if row.number is not None else ""
        return CandleFileError(
            path,
            f"has {row.actual_columns} columns, expected {expected}: {row.text[:120]!r}",
            where,
        )

    # -- Parquet -------------------------------------------------------------------------

    def _parquet_file(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.source.path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise CandleFileError(
                self.source.path, f"is not a readable Parquet file: {exc}"
            ) from None

    def _parquet_rows(self) -> int:
        return int(self._parquet_file().metadata.num_rows)

    def _parquet_batches(self) -> Iterator[RawBatch]:
        file = self._parquet_file()
        by_name = {_canonical(name): name for name in file.schema_arrow.names}
        missing = [column for column in REQUIRED_COLUMNS if column not in by_name]
        if missing:
            raise CandleFileError(
                self.source.path,
                f"has no column {', '.join(missing)}; expected columns named like "
                f"{','.join(CANDLE_COLUMNS)}",
            )
        used = [column for column in USED_COLUMNS if column in by_name]
        next_row = 1
        try:
            for batch in file.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, columns=[by_name[c] for c in used]
            ):
                if batch.num_rows == 0:
                    continue
                columns = {column: batch.column(by_name[column]) for column in used}
                yield RawBatch(columns, next_row, "row", next_row - 1 + batch.num_rows)
                next_row += batch.num_rows
        except (OSError, pa.ArrowInvalid) as exc:
            raise CandleFileError(self.source.path, f"cannot be read: {exc}") from None
