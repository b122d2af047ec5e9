"""The outbox table, message content types and the producer API (no Celery, no HTTP)."""

from models.async_producer import aenqueue, aenqueue_many
from models.content import (
    CONTENT_TYPES,
    Content,
    SMSFromAlpha,
    SMSProject,
    VoiceProject,
    WhatsappProject,
    parse_content,
)
from models.errors import DuplicateMessage, InvalidMessage, UnsupportedTransaction
from models.limits import DEFAULT_LIMITS, MessageLimits
from models.message import MessageOptions, NewMessage
from models.outbox import Base, OutboxMessage
from models.priority import Priority
from models.producer import enqueue, enqueue_many
from models.quotas import outbox_tenant_quotas
from models.recipient import normalize_recipient
from models.reports import (
    FINAL_DELIVERY_STATUSES,
    NON_FINAL_STATUSES,
    DeliveryStatus,
    is_final_status,
    outbox_delivery_reports,
)
from models.screening import StoredMessage, decode_stored_content, screen_stored
from models.segments import Encoding, Segments, segments_of
from models.status import FINAL_STATUSES, Status
from models.suppressions import Scope, outbox_recipient_pacing, outbox_suppressions

metadata = Base.metadata

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_LIMITS",
    "FINAL_DELIVERY_STATUSES",
    "FINAL_STATUSES",
    "NON_FINAL_STATUSES",
    "Content",
    "DeliveryStatus",
    "DuplicateMessage",
    "Encoding",
    "InvalidMessage",
    "MessageLimits",
    "MessageOptions",
    "NewMessage",
    "OutboxMessage",
    "Priority",
    "SMSFromAlpha",
    "SMSProject",
    "Scope",
    "Segments",
    "Status",
    "StoredMessage",
    "UnsupportedTransaction",
    "VoiceProject",
    "WhatsappProject",
    "aenqueue",
    "aenqueue_many",
    "decode_stored_content",
    "enqueue",
    "enqueue_many",
    "is_final_status",
    "metadata",
    "normalize_recipient",
    "outbox_delivery_reports",
    "outbox_recipient_pacing",
    "outbox_suppressions",
    "outbox_tenant_quotas",
    "parse_content",
    "screen_stored",
    "segments_of",
]
