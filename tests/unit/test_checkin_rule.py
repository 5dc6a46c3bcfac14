"""The check-in decision of docs/architecture.md (holds first), the copy chosen for a
hold, and which loan policy applies."""

from __future__ import annotations

from services.circulation import domain as circ
from services.circulation.domain import OpenTransfer, decide_checkin, placement_of_new_item


def test_at_owning_branch_reshelves() -> None:
    d = decide_checkin(branch="A", owning_branch="A", open_transfer=None)
    assert (d.disposition, d.status, d.site, d.transfer_to) == ("reshelve", "available", "A", None)


def test_elsewhere_goes_home() -> None:
    d = decide_checkin(branch="B", owning_branch="A", open_transfer=None)
    assert (d.disposition, d.status, d.transfer_to, d.reason) == (
        "transfer", "in_transit", "A", "return_home")
    assert d.site == "B"


def test_shared_floating_group_floats() -> None:
    d = decide_checkin(branch="B", owning_branch="A", open_transfer=None,
                       floating_group_here="north", floating_group_owner="north")
    assert (d.disposition, d.site, d.transfer_to) == ("float", "B", None)


def test_different_floating_groups_go_home() -> None:
    d = decide_checkin(branch="B", owning_branch="A", open_transfer=None,
                       floating_group_here="north", floating_group_owner="south")
    assert d.transfer_to == "A"


def test_checkin_at_transfer_destination_completes_it() -> None:
    d = decide_checkin(branch="A", owning_branch="A", open_transfer=OpenTransfer("T1", "A"))
    assert d.complete_transfer == "T1" and d.transfer_to is None and d.cancel_transfer is None
    assert d.status == "available"


def test_checkin_elsewhere_reroutes_never_two_transfers() -> None:
    d = decide_checkin(branch="C", owning_branch="A", open_transfer=OpenTransfer("T1", "A"))
    assert d.cancel_transfer == "T1"
    assert d.transfer_to == "A" and d.complete_transfer is None


def test_new_item_goes_from_processing_to_owner() -> None:
    assert placement_of_new_item(site="JX-CENTRAL", owning_branch="A") == ("in_transit", "A")
    assert placement_of_new_item(site="A", owning_branch="A") == ("available", None)


# --- holds in the check-in decision, loan policies -------------------------------------------


def test_holds_come_before_home_in_the_checkin_decision() -> None:
    here = circ.WaitingHold("H1", "JX-A")
    d = circ.decide_checkin(branch="JX-A", owning_branch="JX-B", open_transfer=None,
                            hold_here=here)
    assert (d.disposition, d.status, d.hold_id) == ("hold_shelf", "on_hold_shelf", "H1")
    d = circ.decide_checkin(branch="JX-B", owning_branch="JX-B", open_transfer=None,
                            hold_elsewhere=here)
    assert (d.disposition, d.transfer_to, d.reason, d.hold_id) == ("transfer", "JX-A",
                                                                   "hold", "H1")
    # a transfer that carried the copy to its hold ends on the hold shelf
    d = circ.decide_checkin(branch="JX-A", owning_branch="JX-B",
                            open_transfer=circ.OpenTransfer("T1", "JX-A"), transfer_hold=here)
    assert (d.disposition, d.complete_transfer, d.hold_id) == ("hold_shelf", "T1", "H1")
    # ...and is re-routed, still for the hold, when it turns up elsewhere
    d = circ.decide_checkin(branch="JX-C", owning_branch="JX-B",
                            open_transfer=circ.OpenTransfer("T1", "JX-A"), transfer_hold=here)
    assert (d.cancel_transfer, d.transfer_to, d.reason) == ("T1", "JX-A", "hold")


def test_the_copy_to_fill_a_hold() -> None:
    a = circ.NetworkSite("A", "H1", 30.75, 120.75)
    b = circ.NetworkSite("B", "H1", 30.70, 120.70)
    c = circ.NetworkSite("C", "H2", 30.74, 120.76)
    assert circ.move_cost(b, a, False)[0] == 1 and circ.move_cost(c, a, False)[0] == 2
    assert circ.move_cost(c, a, True)[0] == 0  # a route takes it straight there
    sites = {"A": a, "B": b, "C": c}

    def cost(origin: str, pickup: str) -> tuple[int, float]:
        return circ.move_cost(sites[origin], sites[pickup], False)

    copies = [circ.Candidate("X2", "C"), circ.Candidate("X1", "B")]
    assert circ.choose_copy("A", copies, cost) == circ.Candidate("X1", "B")  # same hub
    assert circ.choose_copy("A", [*copies, circ.Candidate("X9", "A")], cost).barcode == "X9"
    assert circ.choose_copy("A", [], cost) is None


def test_the_most_specific_loan_policy_applies() -> None:
    default = circ.LoanPolicy("*", "*", 30, 1, 20)
    policies = [circ.LoanPolicy("*", "av", 7, 0, 5), circ.LoanPolicy("rural", "*", 45, 2, 30),
                circ.LoanPolicy("JX-A", "*", 21, 1, 10)]
    assert circ.choose_policy(policies, site="JX-A", group="rural", item_type=None,
                              default=default).loan_days == 21
    assert circ.choose_policy(policies, site="JX-B", group="rural", item_type="book",
                              default=default).loan_days == 45
    assert circ.choose_policy(policies, site="JX-C", group=None, item_type="av",
                              default=default).loan_days == 7
    assert circ.choose_policy(policies, site="JX-C", group=None, item_type="book",
                              default=default) is default
