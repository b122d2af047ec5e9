"""The sending gate: the one state every worker shares, its table, its transitions and read-out.

One row, read before every batch, holds the brakes: a pause (Retry-After, backoff), the circuit
(request-level failures in a row, the probe's lease and cadence), the request rate (learnt from
429s, or configured) with its slot cursor, and the learnt batch limit. Refused API keys have a
table of their own: a refused key stops that key only. Wiraya limits each account on its own:
a tenant's own key has its own row in outbox_key_gates (its 429 pause, its rate and slots, a
version guarding its tenants' claims, the tenants the workers name it by), WIRAYA_API_KEY's
are the gate row's; the circuit, the failures' pause (``api_paused_until``) and the batch
limit are every key's.

Every brake has an exit that needs nobody: a pause ends at its time, an open circuit probes on
its cadence, a refused key tries one message on its own slow cadence (and, while the circuit is
open, that message is the circuit's probe), the learnt rate and batch limit creep back.

Every transition is one statement whose WHERE (or CASE) compares the row with what the worker
knows: the version it read, or the moment its own request started. A stale worker's write is
refused, not applied (docs/sending-gate.md):

- ``close_circuit_unless_failed_since(started)``: a success closes the circuit and lifts the
  pause only when no failure was noted after that request started;
- ``count_failure_unless_answered_since(started)``: a failure counts (and pauses) only when no
  request was answered after it started: otherwise it is the message, not the API;
- ``take_probe_if_free`` / ``take_key_probe_if_free``: one probe at a time, on its cadence;
- ``book_slot_if_unchanged(next_send_at, rate)``: a request slot is taken only from the key's
  cursor read, spaced by the key's rate read;
- ``change_rate_if_unchanged(rate)``: the learnt rate grows only from the value read;
- ``lower_rate_if_unchanged(rate, next_send_at)``: a 429 brings the key's rate down and moves
  its cursor on by the wider spacing, from the values read (read again while bookings refuse
  it); ``lower_rate``, its fallback, brings it down whatever raised it since, never up;
- ``note_key_rate_limited``: a 429 under a tenant's own key pauses that key alone, never shorter
  (these three and ``change_rate_if_unchanged`` live in `worker.dispatch.gate.accounts`; they
  and ``book_slot_if_unchanged`` act on the key's own row, or for WIRAYA_API_KEY the gate row);
- ``limit_batch_size_to_proven`` / ``prove_batch_size`` (in ``batch_transitions``): never
  below what answers proved;
- ``lower_batch_size_to``: a size refused though both its halves were taken comes down, only
  ever down; ``raise_batch_limit_if_unchanged``: the limit creeps up only from the value read.

The claim itself is guarded by the version (`worker.dispatch.claim`): a batch is claimed only
if no brake changed since the worker read the gate, so a worker that slept never sends on a
stale reading.
"""

from worker.dispatch.gate.readout import GateState, KeyState, read_gate, read_keys
from worker.dispatch.gate.state import (
    GATE_NAME,
    GateView,
    dispatch_gate,
    key_gates,
    read,
    refused_keys,
)
from worker.dispatch.gate.transitions import reset as reset_gate

__all__ = [
    "GATE_NAME",
    "GateState",
    "GateView",
    "KeyState",
    "dispatch_gate",
    "key_gates",
    "read",
    "read_gate",
    "read_keys",
    "refused_keys",
    "reset_gate",
]
