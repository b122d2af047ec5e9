"""The outbox table, message content types and the producer API (no Celery, no HTTP)."""

from models.content import (
    CONTENT_TYPES,
    Content,
    SMSFromAlpha,
    SMSProject,
    VoiceProject,
    WhatsappProject,
    parse_content,
)
from models.delivery import (
    NON_FINAL_STATUSES,
    DeliveryStatus,
    is_final_status,
    outbox_delivery_reports,
)
from models.errors import DuplicateMessage, InvalidMessage
from models.outbox import Base, OutboxMessage
from models.priority import Priority
from models.producer import NewMessage, enqueue, enqueue_many
from models.recipient import normalize_recipient
from models.status import FINAL_STATUSES, Status

metadata = Base.metadata

__all__ = [
    "CONTENT_TYPES",
    "FINAL_STATUSES",
    "NON_FINAL_STATUSES",
    "Content",
    "DeliveryStatus",
    "DuplicateMessage",
    "InvalidMessage",
    "NewMessage",
    "OutboxMessage",
    "Priority",
    "SMSFromAlpha",
    "SMSProject",
    "Status",
    "VoiceProject",
    "WhatsappProject",
    "enqueue",
    "enqueue_many",
    "is_final_status",
    "metadata",
    "normalize_recipient",
    "outbox_delivery_reports",
    "parse_content",
]
