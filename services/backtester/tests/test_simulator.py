"""The simulated account on hand-computed cases: fees, FIFO lots, cash limits, open positions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from backtester.simulator import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st
from shared.fill_model import QUANTITY_STEP, FillModel

D = Decimal
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def hour(n: int) -> datetime:
    return T0 + timedelta(hours=n)


def make(balance: str = "10000", fee: str = "0.001") -> Simulator:
    return Simulator("BTCUSDT", D(balance), FillModel(fee_rate=D(fee)))


def test_fees_are_charged_on_both_sides() -> None:
    sim = make()
    sim.buy(hour(0), D(1), D(100))
    assert sim.cash == D("9899.9")  # 10000 − 100 − 0.1
    sim.sell(hour(3), D(1), D(110))
    assert sim.cash == D("10009.79")  # + 110 − 0.11
    assert sim.fees_paid == D("0.21")
    [trade] = sim.trades
    assert (trade.entry_price, trade.exit_price, trade.quantity) == (D(100), D(110), D(1))
    assert trade.pnl == D("9.79")
    assert trade.pnl_pct == float(D("9.79") / 100)
    assert trade.holding_period == timedelta(hours=3)
    assert sim.position_quantity == 0 and sim.open_position(D(1)) is None


def test_partial_exits_close_lots_first_in_first_out() -> None:
    sim = make()
    sim.buy(hour(0), D(1), D(100))  # fee 0.1
    sim.buy(hour(1), D(2), D(120))  # fee 0.24
    sim.sell(hour(2), D("1.5"), D(130))  # fee 0.195: one third to the 0.5 of lot 2
    first, second = sim.trades
    assert (first.entry_time, first.quantity, first.entry_price) == (hour(0), D(1), D(100))
    assert first.pnl == D(30) - D("0.1") - D("0.13")
    assert (second.entry_time, second.quantity, second.entry_price) == (hour(1), D("0.5"), D(120))
    assert second.pnl == D(5) - D("0.06") - D("0.065")
    assert sim.position_quantity == D("1.5")
    sim.sell(hour(5), D(9), D(110))  # more than held: sells the 1.5 left, fee 0.165
    third = sim.trades[2]
    assert (third.quantity, third.entry_time, third.holding_period) == (
        D("1.5"),
        hour(1),
        timedelta(hours=4),
    )
    assert third.pnl == D(-15) - D("0.18") - D("0.165")
    assert sim.position_quantity == 0
    total_pnl = sum((t.pnl for t in sim.trades), D(0))
    assert sim.cash == D(10000) + total_pnl


def test_a_sell_with_nothing_held_does_nothing() -> None:
    sim = make()
    assert sim.sell(hour(0), D(1), D(100)) is None
    assert (sim.cash, sim.position_quantity, sim.trades, sim.fees_paid) == (D(10000), 0, [], 0)
    assert sim.sells_ignored == 1


def test_a_buy_cash_cannot_cover_is_reduced_then_skipped() -> None:
    sim = make(balance="100", fee="0.001")
    fill = sim.buy(hour(0), D(2), D(60))
    assert fill is not None and fill.quantity < 2
    assert fill.notional + fill.fee <= D(100)
    # reduced to the largest quantity step cash covers: less than one more step is left
    assert 0 <= sim.cash < QUANTITY_STEP * D(60) * D("1.001")
    assert sim.buys_reduced == 1
    assert sim.buy(hour(1), D(1), D(60)) is None
    assert sim.buys_skipped == 1 and len(sim.lots) == 1


def test_an_open_position_is_marked_to_market_not_closed() -> None:
    sim = make()
    sim.buy(hour(0), D(1), D(100))
    sim.buy(hour(1), D(1), D(200))
    position = sim.open_position(D(180))
    assert position is not None
    assert position.quantity == 2 and position.avg_entry_price == D(150)
    assert position.entry_time == hour(0)
    assert position.market_value == D(360)
    assert position.unrealized_pnl == D(360) - D(300) - D("0.3")
    assert sim.equity(D(180)) == D(10000) - D(300) - D("0.3") + D(360)
    assert sim.trades == []


def test_slippage_goes_against_the_trader_on_both_sides() -> None:
    sim = Simulator("BTCUSDT", D(1000), FillModel(fee_rate=D(0), slippage=D("0.01")))
    sim.buy(hour(0), D(1), D(100))
    sim.sell(hour(1), D(1), D(100))
    [trade] = sim.trades
    assert (trade.entry_price, trade.exit_price, trade.pnl) == (D(101), D(99), D(-2))


def test_reset_restores_the_initial_account() -> None:
    sim = make()
    sim.buy(hour(0), D(1), D(100))
    sim.sell(hour(1), D(2), D(100))
    sim.reset()
    assert (sim.cash, sim.position_quantity, sim.trades, sim.fees_paid) == (D(10000), 0, [], 0)
    assert (sim.buys_reduced, sim.buys_skipped, sim.sells_ignored) == (0, 0, 0)


orders = st.lists(
    st.tuples(
        st.booleans(),
        st.decimals(min_value="0.001", max_value="5", places=3),
        st.decimals(min_value="1", max_value="1000", places=2),
    ),
    max_size=40,
)


@given(orders=orders)
@settings(max_examples=100, deadline=None)
def test_accounting_identity_holds_for_any_order_sequence(
    orders: list[tuple[bool, Decimal, Decimal]],
) -> None:
    """Cash + cost of open lots (fees included) = initial balance + realized pnl, always."""
    sim = make(balance="1000")
    for n, (is_buy, quantity, price) in enumerate(orders):
        (sim.buy if is_buy else sim.sell)(hour(n), quantity, price)
        assert sim.cash >= 0
        assert sim.position_quantity == sum((lot.quantity for lot in sim.lots), D(0))
        open_cost = sum((lot.price * lot.quantity + lot.fee for lot in sim.lots), D(0))
        realized = sum((t.pnl for t in sim.trades), D(0))
        assert abs(sim.cash + open_cost - (D(1000) + realized)) < D("1e-18")
        assert all(t.exit_time >= t.entry_time and t.quantity > 0 for t in sim.trades)
