"""`outbox grants` as printed: quoted names, a schema, roles created only when asked, one role
per process, and the CLI's refusals in one line."""

from __future__ import annotations

import pytest

from worker.errors import GrantsError
from worker.ops.cli import main
from worker.ops.grants import grants_sql, quote
from worker.ops.privileges import HOUSEKEEPING, lifecycle_columns, producer_reads
from worker.runtime.housekeeping import housekeeping


def test_names_are_quoted_so_that_no_role_name_can_end_the_statement() -> None:
    assert quote('x"; DROP TABLE outbox_messages; --') == '"x""; DROP TABLE outbox_messages; --"'
    with pytest.raises(GrantsError):
        quote("")
    script = grants_sql({"worker": 'w"x'}, schema="Outbox Schema")
    assert 'ON TABLE "Outbox Schema".outbox_messages TO "w""x";' in script


def test_roles_are_created_only_when_asked_and_never_twice() -> None:
    assert "CREATE ROLE" not in grants_sql({"worker": "w"})
    created = grants_sql({"worker": "w", "receiver": "r"}, create=True)
    assert created.count("CREATE ROLE") == 2
    assert "EXCEPTION WHEN duplicate_object THEN NULL" in created
    with pytest.raises(GrantsError, match="a role of its own"):
        grants_sql({"worker": "same", "receiver": "same"})


def test_the_script_is_one_transaction_that_revokes_before_it_grants() -> None:
    lines = grants_sql({"producer": "p"}).splitlines()
    assert lines[2] == "BEGIN;" and lines[-1] == "COMMIT;"
    first_grant = next(i for i, line in enumerate(lines) if line.startswith("GRANT"))
    assert all(not line.startswith("REVOKE") for line in lines[first_grant:])


def test_the_producer_reads_no_content_and_the_worker_writes_none() -> None:
    assert not {"recipient", "content", "last_error"} & set(producer_reads())
    assert not {"recipient", "content", "client_message_id", "delivery_status"} & set(
        lifecycle_columns()
    )
    assert housekeeping.name == HOUSEKEEPING


def test_the_cli_prints_the_script_and_refuses_no_role(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["grants", "--worker", "outbox_worker"]) == 0
    assert 'TO "outbox_worker";' in capsys.readouterr().out
    assert main(["grants"]) == 2
    assert capsys.readouterr().err.startswith("outbox: grants: name at least one role")


def test_each_role_gets_exactly_its_share_of_the_sending_policy() -> None:
    def granted(role: str) -> str:
        script = grants_sql({role: role[0]})
        return "\n".join(line for line in script.splitlines() if line.startswith("GRANT"))

    worker, operator = granted("worker"), granted("operator")
    producer, receiver = granted("producer"), granted("receiver")
    assert 'GRANT SELECT, INSERT ON TABLE "public".outbox_suppressions TO "w";' in worker
    pacing = 'GRANT SELECT, INSERT, UPDATE ON TABLE "public".outbox_recipient_pacing TO "w";'
    assert pacing in worker
    assert "segments" in next(line for line in worker.splitlines() if "UPDATE (" in line)
    assert (
        'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE "public".outbox_suppressions TO "o";'
        in operator
    )
    assert "segments" in next(line for line in producer.splitlines() if "INSERT (" in line)
    assert "outbox_suppressions" not in producer + receiver
    assert "outbox_recipient_pacing" not in producer + receiver
