"""The check-in decision of docs/architecture.md (holds join in a later release)."""

from __future__ import annotations

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
