"""A resend counts as overlapping an earlier answer only while that answer's client still waits."""

from datetime import UTC, datetime

from sandbox.ledger import Entry, Ledger

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def receive(ledger: Ledger, *ids: str) -> int:
    def visit(_: Entry) -> None:
        pass

    return ledger.receive([(i, "+46700000001") for i in ids], NOW, visit)


def test_a_resend_while_the_client_still_waits_for_the_answer_overlaps() -> None:
    ledger = Ledger()
    receive(ledger, "a", "b")
    ledger.answering(["a", "b"], lambda: True)

    assert receive(ledger, "a", "c") == 1


def test_a_resend_after_the_client_closed_its_connection_does_not_overlap() -> None:
    """The server's thread may notice the close later than the resend comes: the close counts."""
    ledger = Ledger()
    receive(ledger, "a")
    ledger.answering(["a"], lambda: False)

    assert receive(ledger, "a") == 0


def test_an_answer_written_ends_its_overlap_and_leaves_another_answers() -> None:
    ledger = Ledger()
    receive(ledger, "a")

    def first() -> bool:
        return True

    def second() -> bool:
        return True

    ledger.answering(["a"], first)
    ledger.answering(["a"], second)
    ledger.answered(["a"], first)
    assert receive(ledger, "a") == 1
    ledger.answered(["a"], second)
    assert receive(ledger, "a") == 0
