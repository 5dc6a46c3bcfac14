"""Money never appears or vanishes: for any sequence of opening lines, receiving,
cancelling and paying invoices, a fund's encumbered and spent are exactly what its lines
hold, budget = encumbered + spent + available, nothing goes negative that should not, and
every amount is a Decimal to the cent (never a float)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from services.acquisition import domain

CENTS = st.integers(0, 50_000).map(lambda c: Decimal(c) / 100)


class FundMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fund = domain.FundBalance(Decimal("100000.00"), Decimal("0"), Decimal("0"), "CNY",
                                       stop_percent=Decimal("100"))
        self.lines: list[domain.LineMoney] = []
        self.received: list[int] = []
        self.refused = 0

    @rule(price=CENTS, discount=st.integers(0, 40), quantity=st.integers(1, 50))
    def open_line(self, price: Decimal, discount: int, quantity: int) -> None:
        line = domain.LineMoney(domain.net_price(price, Decimal(discount)), quantity).opened()
        try:
            self.fund = self.fund.encumber(line.encumbered)
        except domain.OverBudget:
            self.refused += 1
            return
        self.lines.append(line)
        self.received.append(0)

    @rule(pick=st.integers(0, 99), copies=st.integers(1, 50))
    def receive(self, pick: int, copies: int) -> None:
        if not self.lines:
            return
        i = pick % len(self.lines)
        line = self.lines[i]
        self.received[i] += min(copies, line.quantity - line.cancelled - self.received[i])

    @rule(pick=st.integers(0, 99), copies=st.integers(1, 50))
    def cancel(self, pick: int, copies: int) -> None:
        if not self.lines:
            return
        i = pick % len(self.lines)
        line = self.lines[i]
        still_to_come = line.quantity - line.cancelled - self.received[i]
        if copies > still_to_come or copies > line.live:
            return
        self.lines[i], released = line.cancel(copies)
        self.fund = self.fund.release(released)

    @rule(pick=st.integers(0, 99), copies=st.integers(1, 50), amount=CENTS)
    def pay(self, pick: int, copies: int, amount: Decimal) -> None:
        if not self.lines:
            return
        i = pick % len(self.lines)
        try:
            self.lines[i], relieved = self.lines[i].pay(copies, amount)
        except domain.OverInvoice:
            assert copies > self.lines[i].live
            return
        self.fund = self.fund.pay(relieved, amount)

    @invariant()
    def fund_holds_what_its_lines_hold(self) -> None:
        f = self.fund
        assert f.encumbered == sum((ln.encumbered for ln in self.lines), Decimal("0"))
        assert f.spent == sum((ln.spent for ln in self.lines), Decimal("0"))
        assert f.encumbered + f.spent + f.available == f.budget
        assert f.encumbered >= 0 and all(ln.encumbered >= 0 for ln in self.lines)

    @invariant()
    def amounts_are_decimal_cents(self) -> None:
        amounts = [self.fund.encumbered, self.fund.spent, self.fund.available]
        amounts += [a for ln in self.lines for a in (ln.encumbered, ln.spent,
                                                      ln.estimated_price)]
        for amount in amounts:
            assert isinstance(amount, Decimal) and not isinstance(amount, float)
            assert amount == amount.quantize(Decimal("0.01"))

    @invariant()
    def a_line_never_encumbers_more_than_its_live_copies(self) -> None:
        for line in self.lines:
            assert line.encumbered <= line.estimated_price * line.live


TestFundMoney = FundMachine.TestCase
TestFundMoney.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


@given(price=CENTS, discount=st.integers(0, 100))
def test_net_price_is_cents_and_never_more_than_the_list_price(price: Decimal,
                                                               discount: int) -> None:
    net = domain.net_price(price, Decimal(discount))
    assert net == net.quantize(Decimal("0.01")) and Decimal("0") <= net <= price
