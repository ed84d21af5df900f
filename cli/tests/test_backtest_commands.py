"""`trading backtest run` end to end on a real candle file: outputs, manifest, errors."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import pytest
from trading_cli.main import app
from typer.testing import CliRunner

ROWS = 2500  # 1h candles of 2019: about 104 days, enough for dozens of trades


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A slice of the real BTCUSDT 1h file, in the same Binance CSV format."""
    source = shared_data / "BTCUSDT-1h.csv.gz"
    target = tmp_path_factory.mktemp("candles") / "BTCUSDT-1h.csv.gz"
    with gzip.open(source, "rt") as src, gzip.open(target, "wt") as dst:
        reader = csv.reader(src)
        writer = csv.writer(dst, lineterminator="\n")
        writer.writerow(next(reader))
        written = 0
        for row in reader:
            if row[0] >= "1546300800000":  # 2019-01-01T00:00Z in ms
                writer.writerow(row)
                written += 1
                if written == ROWS:
                    break
    return target


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["backtest", "run", *args])
    return result.exit_code, result.stdout, result.stderr


def run_json(data_file: Path, *extra: str) -> dict[str, object]:
    code, out, err = invoke(
        "--strategy", "ema_crossover", "--data", str(data_file), "--output", "json", *extra
    )
    assert code == 0, err
    parsed: dict[str, object] = json.loads(out)
    return parsed


def test_json_output_has_the_issue_structure_and_a_manifest(data_file: Path) -> None:
    result = run_json(data_file, "--no-risk", "--param", "quantity=0.01")
    assert set(result) == {"metrics", "run", "trades", "equity_curve", "manifest"}
    metrics = result["metrics"]
    assert isinstance(metrics, dict) and "trades" not in metrics
    assert {"sharpe_ratio", "max_drawdown_duration", "monthly_returns", "sqn"} <= set(metrics)
    assert isinstance(metrics["sharpe_ratio"], float)
    assert isinstance(metrics["avg_win"], str)  # money as a decimal string
    trades = result["trades"]
    assert isinstance(trades, list) and len(trades) == metrics["total_trades"] > 5
    assert trades[0]["quantity"] == "0.01" and trades[0]["entry_time"].endswith("+00:00")
    manifest = result["manifest"]
    assert isinstance(manifest, dict)
    assert manifest["strategy"] == "ema_crossover" and manifest["params"]["quantity"] == "0.01"
    assert (manifest["symbol"], manifest["interval"]) == ("BTCUSDT", "1h")  # from the file name
    assert manifest["data_source"]["sha256"] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert manifest["fee"] == "0.001" and manifest["initial_balance"] == "10000"
    assert manifest["risk"] == {
        "max_position_size": "0",
        "stop_loss_pct": "0",
        "daily_loss_limit_pct": "0",
    }
    curve = result["equity_curve"]
    assert isinstance(curve, list) and len(curve) == result["run"]["candles"]  # type: ignore[index]


def test_the_same_run_twice_gives_identical_json_but_the_manifest_time(data_file: Path) -> None:
    args = ("--strategy", "macd", "--data", str(data_file), "--output", "json")
    first, second = invoke(*args), invoke(*args)
    assert first[0] == second[0] == 0
    one, two = json.loads(first[1]), json.loads(second[1])
    assert one["manifest"].pop("created_at") and two["manifest"].pop("created_at")
    assert json.dumps(one) == json.dumps(two)
    lines_one = [line for line in first[1].splitlines() if '"created_at"' not in line]
    lines_two = [line for line in second[1].splitlines() if '"created_at"' not in line]
    assert lines_one == lines_two  # byte for byte, line by line


def test_risk_settings_come_from_the_options(data_file: Path) -> None:
    result = run_json(
        data_file, "--max-position-size", "0.05", "--stop-loss-pct", "2", "--param", "quantity=1"
    )
    manifest = result["manifest"]
    assert isinstance(manifest, dict)
    assert manifest["risk"]["max_position_size"] == "0.05"
    assert manifest["risk"]["stop_loss_pct"] == "2"
    execution = result["run"]["execution"]  # type: ignore[index]
    # 1 BTC is far more than 5 % of 10000 USDT: every BUY is cut down by the rule
    assert execution["risk_rejections"]["max_position_size"] > 0


def test_csv_output_writes_the_trades(data_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "trades.csv"
    code, _, err = invoke(
        "--strategy",
        "ema_crossover",
        "--data",
        str(data_file),
        "--output",
        "csv",
        "--file",
        str(target),
    )
    assert code == 0, err
    rows = list(csv.DictReader(target.open()))
    result = run_json(data_file)
    assert len(rows) == len(result["trades"])  # type: ignore[arg-type]
    assert list(rows[0]) == [
        "entry_time",
        "exit_time",
        "symbol",
        "side",
        "entry_price",
        "exit_price",
        "quantity",
        "pnl",
        "pnl_pct",
        "holding_period",
    ]


def test_table_output_and_html_plot(data_file: Path, tmp_path: Path) -> None:
    plot = tmp_path / "chart.html"
    code, out, err = invoke(
        "--strategy", "ema_crossover", "--data", str(data_file), "--plot", str(plot)
    )
    assert code == 0, err
    for part in ("Sharpe ratio", "Monthly returns", "Top 5 trades", "Equity and drawdown"):
        assert part in out
    text = plot.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text and "<polyline" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--strategy", "no_such_thing"), "unknown strategy"),
        (("--strategy", "ema_crossover", "--data", "/nonexistent/x.csv"), "not found"),
        (("--strategy", "ema_crossover", "--start", "2030-13-01"), "is not a date"),
        (
            ("--strategy", "ema_crossover", "--start", "2020-02-01", "--end", "2020-01-01"),
            "must be before",
        ),
        (("--strategy", "ema_crossover", "--plot", "chart.pdf"), ".html or .png"),
        (("--strategy", "ema_crossover", "--fee", "abc"), "is not a number"),
    ],
)
def test_bad_input_is_one_clear_line_and_a_non_zero_exit(
    args: tuple[str, ...], message: str
) -> None:
    code, _, err = invoke(*args)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_no_candles_in_range_is_an_error(data_file: Path) -> None:
    code, _, err = invoke(
        "--strategy", "ema_crossover", "--data", str(data_file), "--start", "2030-01-01"
    )
    assert code != 0
    assert "no candles" in err and len(err.strip().splitlines()) == 1


async def _store(url: str, path: Path) -> int:
    from backtester.data import load_file_candles
    from shared.db import create_engine, create_sessionmaker, upsert_candles

    candles = load_file_candles(path, "BTCUSDT", "1h").candles
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            await upsert_candles(session, candles)
            await session.commit()
    finally:
        await engine.dispose()
    return len(candles)


def test_database_run_equals_the_file_run(data_file: Path, migrated_database_url: str) -> None:
    import asyncio

    asyncio.run(_store(migrated_database_url, data_file))
    args = ("--strategy", "ema_crossover", "--output", "json", "--start", "2019-01-10")
    result = CliRunner().invoke(
        app, ["backtest", "run", *args], env={"DATABASE_URL": migrated_database_url}
    )
    assert result.exit_code == 0, result.stderr
    from_db = json.loads(result.stdout)
    code, out, err = invoke(*args, "--data", str(data_file))
    assert code == 0, err
    from_file = json.loads(out)
    assert from_db["manifest"]["data_source"]["type"] == "database"
    assert from_db["run"]["warmup_candles"] == from_file["run"]["warmup_candles"] == 21
    for key in ("metrics", "run", "trades", "equity_curve"):
        assert from_db[key] == from_file[key], key
