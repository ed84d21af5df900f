"""Reading and validating candle files, without a database: formats, exactness, bad rows."""

from __future__ import annotations

import gzip
import zipfile
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared.candle_io import CandleBatch, CandleFileError, read_candle_file
from shared.candle_io.importer import infer_series


def real_lines(shared_data: Path, name: str, count: int) -> list[str]:
    """The header and the first `count` rows of a file in ../shared/data, as text lines."""
    with gzip.open(shared_data / name, "rt") as file:
        return [next(file).rstrip("\n") for _ in range(count + 1)]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def read_all(path: Path, interval: str) -> list[tuple[object, ...]]:
    """Every candle of a file as comparable tuples: time, OHLCV, quote volume, trades."""
    rows: list[tuple[object, ...]] = []
    for batch in read_candle_file(path, interval):
        rows.extend(_tuples(batch))
    return rows


def _tuples(batch: CandleBatch) -> list[tuple[object, ...]]:
    return [
        (
            candle.open_time,
            candle.open,
            candle.high,
            candle.low,
            candle.close,
            candle.volume,
            candle.quote_volume,
            candle.trades,
        )
        for candle in batch.to_candles("BTCUSDT", "15m")
    ]


def binance_raw_lines(csv_lines: list[str], *, microseconds: bool = False) -> list[str]:
    """Rewrite this project's CSV rows as Binance's archive rows: no header, a 12th column."""
    raw = []
    for line in csv_lines[1:]:
        fields = line.split(",")
        if microseconds:
            fields[0] = str(int(fields[0]) * 1000)
            fields[6] = str(int(fields[6]) * 1000 + 999)
        raw.append(",".join([*fields, "0"]))
    return raw


@pytest.fixture
def lines_15m(shared_data: Path) -> list[str]:
    return real_lines(shared_data, "BTCUSDT-15m.csv.gz", 300)


def test_csv_values_are_the_files_text_as_exact_decimals(
    tmp_path: Path, lines_15m: list[str]
) -> None:
    candles = read_all(write(tmp_path / "BTCUSDT-15m.csv", lines_15m), "15m")

    assert len(candles) == 300
    for line, candle in zip(lines_15m[1:], candles, strict=True):
        fields = line.split(",")
        assert candle[0].timestamp() * 1000 == int(fields[0])  # type: ignore[attr-defined]
        assert candle[1:6] == tuple(Decimal(text) for text in fields[1:6])
        assert candle[6] == Decimal(fields[7])
        assert candle[7] == int(fields[8])


def test_ohlcv_only_file_leaves_quote_volume_and_trades_empty(
    tmp_path: Path, shared_data: Path
) -> None:
    path = write(tmp_path / "ohlcv.csv", real_lines(shared_data, "BTCUSDT-1m.csv.gz", 50))
    batch = next(read_candle_file(path, "1m"))
    candle = batch.to_candles("BTCUSDT", "1m")[0]
    assert candle.quote_volume is None
    assert candle.trades is None
    assert candle.open == Decimal("24899.18")


def test_fast_candles_equal_the_pydantic_validated_ones(
    tmp_path: Path, lines_15m: list[str], shared_data: Path
) -> None:
    full = next(read_candle_file(write(tmp_path / "full.csv", lines_15m), "15m"))
    ohlcv_lines = real_lines(shared_data, "BTCUSDT-1m.csv.gz", 50)  # no quote volume, trades
    ohlcv = next(read_candle_file(write(tmp_path / "ohlcv.csv", ohlcv_lines), "1m"))
    for batch, interval in ((full, "15m"), (ohlcv, "1m")):
        fast = batch.candles("BTCUSDT", interval)
        validated = batch.to_candles("BTCUSDT", interval)
        assert fast == validated
        assert [c.model_dump() for c in fast] == [c.model_dump() for c in validated]
        assert [c.model_fields_set for c in fast] == [c.model_fields_set for c in validated]
        assert {hash(c) for c in fast} == {hash(c) for c in validated}
    assert full.candles("BTCUSDT", "15m")[5].trades == int(lines_15m[6].split(",")[8])
    # They behave as any model: frozen, and copies are independent.
    candle = full.candles("BTCUSDT", "15m")[3]
    with pytest.raises(ValueError, match="frozen"):
        candle.close = Decimal(1)  # type: ignore[misc]
    copy = candle.model_copy(update={"close": Decimal(1)})
    assert (copy.close, candle.close) == (Decimal(1), Decimal(lines_15m[4].split(",")[4]))
    # The symbol and interval are still validated.
    with pytest.raises(ValueError, match="upper-case"):
        full.candles("btcusdt", "15m")
    with pytest.raises(ValueError, match="unknown interval"):
        full.candles("BTCUSDT", "7m")


@pytest.mark.parametrize("microseconds", [False, True], ids=["ms", "us"])
@pytest.mark.parametrize("compression", ["plain", "gzip", "zip"])
def test_binance_raw_kline_csv_reads_as_the_project_csv(
    tmp_path: Path, lines_15m: list[str], compression: str, microseconds: bool
) -> None:
    expected = read_all(write(tmp_path / "reference.csv", lines_15m), "15m")
    text = "\n".join(binance_raw_lines(lines_15m, microseconds=microseconds)) + "\n"
    # Named without an extension: the format is told by the bytes, not the name.
    path = tmp_path / "BTCUSDT-15m-2023-01"
    if compression == "gzip":
        path.write_bytes(gzip.compress(text.encode()))
    elif compression == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("BTCUSDT-15m-2023-01.csv", text)
    else:
        path.write_text(text)

    assert read_all(path, "15m") == expected


@pytest.mark.parametrize("time_type", ["int_ms", "timestamp"])
def test_parquet_reads_as_the_project_csv(
    tmp_path: Path, lines_15m: list[str], time_type: str
) -> None:
    expected = read_all(write(tmp_path / "reference.csv", lines_15m), "15m")
    rows = [line.split(",") for line in lines_15m[1:]]
    open_ms = pa.array([int(row[0]) for row in rows], pa.int64())
    table = pa.table(
        {
            "open_time": open_ms if time_type == "int_ms" else open_ms.cast(pa.timestamp("ms")),
            # Prices as doubles, as pandas would write them: their shortest text is the CSV's.
            **{
                name: pa.array([float(row[i]) for row in rows])
                for i, name in enumerate(["open", "high", "low", "close", "volume"], start=1)
            },
            "quote_volume": pa.array([row[7] for row in rows]),
            "trades": pa.array([int(row[8]) for row in rows]),
        }
    )
    path = tmp_path / "candles.parquet"
    pq.write_table(table, path)

    assert read_all(path, "15m") == expected


def corrupt(lines: list[str], line_number: int, column: int, value: str) -> list[str]:
    """The lines with one field of one (1-based) line replaced."""
    changed = list(lines)
    fields = changed[line_number - 1].split(",")
    fields[column] = value
    changed[line_number - 1] = ",".join(fields)
    return changed


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        (2, "16000.01", "line 150: high 16000.01 is below open"),
        (4, "99999", "line 150: high {high} is below close 99999"),
        (3, "99999", "line 150: low 99999 is above open"),
        (5, "-1.5", "line 150: volume -1.5 is negative"),
        (1, "0", "line 150: open 0 is not above 0"),
        (2, "abc", "line 150: high 'abc' is not a number"),
        (3, "", "line 150: low is empty"),
        (0, "1672742730000", "line 150: open_time 2023-01-03T10:45:30Z is not on the 15m grid"),
        (8, "-4", "line 150: trades -4 is negative"),
    ],
)
def test_bad_row_is_reported_with_its_line_and_problem(
    tmp_path: Path, lines_15m: list[str], column: int, value: str, expected: str
) -> None:
    high = lines_15m[149].split(",")[2]
    path = write(tmp_path / "bad.csv", corrupt(lines_15m, 150, column, value))

    with pytest.raises(CandleFileError) as caught:
        read_all(path, "15m")

    assert f"bad.csv: {expected.format(high=high)}" in str(caught.value)
    assert caught.value.location == "line 150"


def test_rows_out_of_order_or_repeated_are_rejected(tmp_path: Path, lines_15m: list[str]) -> None:
    repeated = [*lines_15m[:100], lines_15m[99], *lines_15m[100:]]
    with pytest.raises(CandleFileError, match=r"line 101: open_time .* does not come after"):
        read_all(write(tmp_path / "dup.csv", repeated), "15m")


def test_rows_are_checked_across_batch_boundaries(tmp_path: Path, shared_data: Path) -> None:
    lines = real_lines(shared_data, "BTCUSDT-1m.csv.gz", 20_000)
    lines[15_001] = lines[15_000]  # line 15,002 repeats line 15,001, past the first block
    path = write(tmp_path / "big.csv", lines)
    from shared.candle_io import CandleReader, CandleValidator, detect_source

    reader = CandleReader(detect_source(path), block_bytes=64 << 10)
    validator = CandleValidator(path, "1m")
    with pytest.raises(CandleFileError) as caught:
        for raw in reader.batches():
            validator.validate(raw)
    assert caught.value.location == "line 15002"


def test_decimals_that_tie_as_floats_are_compared_exactly(
    tmp_path: Path, lines_15m: list[str]
) -> None:
    # As floats both are 27150.0; only the exact comparison sees high below close.
    fields = lines_15m[10].split(",")
    fields[1:5] = ["27150", "27150.00000000000000001", "27150", "27150.00000000000000002"]
    lines = [*lines_15m[:10], ",".join(fields), *lines_15m[11:]]

    with pytest.raises(CandleFileError, match=r"line 11: high 27150\.00000000000000001 is below"):
        read_all(write(tmp_path / "tie.csv", lines), "15m")


def test_close_time_beyond_the_interval_means_the_interval_is_wrong(
    tmp_path: Path, lines_15m: list[str]
) -> None:
    path = write(tmp_path / "BTCUSDT-15m.csv", lines_15m)
    with pytest.raises(CandleFileError, match=r"line 2: close_time .* is outside the 5m candle"):
        read_all(path, "5m")


def test_blank_lines_are_skipped_and_keep_line_numbers(
    tmp_path: Path, lines_15m: list[str]
) -> None:
    lines = [*lines_15m[:50], "", *corrupt(lines_15m, 150, 5, "-1")[50:]]
    with pytest.raises(CandleFileError) as caught:
        read_all(write(tmp_path / "blank.csv", lines), "15m")
    assert caught.value.location == "line 151"


def test_row_with_a_missing_column_names_its_line(tmp_path: Path, lines_15m: list[str]) -> None:
    lines = list(lines_15m)
    lines[41] = lines[41].rsplit(",", 1)[0]
    with pytest.raises(CandleFileError, match="line 42: has 10 columns, expected 11"):
        read_all(write(tmp_path / "short.csv", lines), "15m")
    raw = binance_raw_lines(lines_15m)
    raw[41] = raw[41].rsplit(",", 1)[0]
    with pytest.raises(CandleFileError, match="line 42: has 11 columns, expected 12"):
        read_all(write(tmp_path / "short-raw.csv", raw), "15m")


def test_weekly_candles_must_open_on_monday(tmp_path: Path, lines_15m: list[str]) -> None:
    # 2023-01-02 was a Monday; 2023-01-05 (a multiple of 7 days since 1970) a Thursday.
    fields = lines_15m[1].split(",")[:6]
    monday = [",".join(["1672617600000", *fields[1:]]), ",".join(["1673222400000", *fields[1:]])]
    header = "open_time,open,high,low,close,volume"
    assert len(read_all(write(tmp_path / "w.csv", [header, *monday]), "1w")) == 2

    thursday = [",".join(["1672876800000", *fields[1:]])]
    with pytest.raises(CandleFileError, match=r"line 2: .*1w candles open on Mondays"):
        read_all(write(tmp_path / "t.csv", [header, *thursday]), "1w")


def test_files_of_no_known_format_are_rejected(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CandleFileError, match="is not a candle file"):
        read_all(garbage, "1m")
    with pytest.raises(CandleFileError, match="no such file"):
        read_all(tmp_path / "missing.csv", "1m")
    headless = write(tmp_path / "h.csv", ["time,price", "1,2"])
    with pytest.raises(CandleFileError, match="is not a candle file"):
        read_all(headless, "1m")
    no_volume = write(tmp_path / "v.csv", ["open_time,open,high,low,close,vol", "0,1,1,1,1,1"])
    with pytest.raises(CandleFileError, match="line 1: header lacks volume"):
        read_all(no_volume, "1m")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BTCUSDT-1m.csv.gz", ("BTCUSDT", "1m")),
        ("ETHUSDT-15m-2024-05.zip", ("ETHUSDT", "15m")),
        ("BTCUSDT-1h.parquet", ("BTCUSDT", "1h")),
        ("BTCUSDT-7m.csv", ("BTCUSDT", None)),
        ("candles.csv", (None, None)),
    ],
)
def test_symbol_and_interval_come_from_binance_style_file_names(
    name: str, expected: tuple[str | None, str | None]
) -> None:
    assert infer_series(Path(name)) == expected
