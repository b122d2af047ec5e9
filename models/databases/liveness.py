"""A pooled connection checked before it is handed out: a round trip only after it idled.

SQLAlchemy's pre-ping spends a round trip on every checkout, before every group of statements.
A connection checked in a moment ago was alive then, and one that died since (its backend
terminated, the server or the pooler restarted or closed it) has said so on its socket: the
server's last message, or the end of the stream, waits there to be read. So a connection idle
for less than ``PING_AFTER`` whose socket has nothing to read is handed out as it is; any other
is pinged, and one whose ping fails is replaced: the pool reconnects, and retires every
connection older than the failure, as after a failed pre-ping. The window is HikariCP's idea
(``aliveBypassWindow``); the look at the socket keeps a connection killed inside it from
failing its first statement. A statement can still meet a connection that dies under it, as
it could after a ping: a claim then takes nothing, and a record is retried within its lease.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, exc

# A connection checked in longer ago than this is pinged before it is handed out.
PING_AFTER = timedelta(seconds=1)
# Where a connection's record keeps when it was last checked in (on the monotonic clock).
_CHECKED_IN = "outbox_checked_in"


def checked_engine(url: URL, options: dict[str, Any]) -> Engine:
    """``create_engine``, its pooled connections checked so unless ``options`` name
    ``pool_pre_ping`` (SQLAlchemy's on every checkout, or none)."""
    engine = create_engine(url, **options)
    if "pool_pre_ping" not in options:
        check_before_use(engine)
    return engine


def check_before_use(
    engine: Engine,
    *,
    ping_after: timedelta = PING_AFTER,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Check ``engine``'s pooled connections at checkout as this module says (instead of
    ``pool_pre_ping``): a new connection is not checked, a recent one's socket is, any other
    is pinged."""
    window = ping_after.total_seconds()
    dialect = engine.dialect

    def connected(_dbapi_connection: Any, record: Any) -> None:
        record.info.pop(_CHECKED_IN, None)  # new: nothing to check yet

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = monotonic()

    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(_CHECKED_IN, None)
        if since is None or (monotonic() - since < window and quiet(dbapi_connection)):
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            raise exc.InvalidatePoolError(f"ping before use failed: {error}") from error
        if not alive:
            raise exc.InvalidatePoolError("ping before use failed")

    event.listen(engine.pool, "connect", connected)
    event.listen(engine.pool, "checkin", checked_in)
    event.listen(engine.pool, "checkout", checked_out)


def quiet(dbapi_connection: Any) -> bool:
    """Whether the driver's connection is open and its socket has nothing to read, which an
    idle connection's has not (no request is out); False when that cannot be told."""
    if getattr(dbapi_connection, "closed", True) or getattr(dbapi_connection, "broken", False):
        return False
    try:
        socket = dbapi_connection.fileno()
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(socket, select.POLLIN | select.POLLPRI)  # hang-ups come regardless
            return not poller.poll(0)
        readable, _, failed = select.select([socket], [], [socket], 0)
        return not (readable or failed)
    except (AttributeError, OSError, ValueError):
        return False
