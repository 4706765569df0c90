"""Request models shared by REST bodies, socket payloads and (later) the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any, Self

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)

UserId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
NotificationId = Annotated[str | int, Field(union_mode="left_to_right")]


MAX_BROADCAST_DATA_BYTES = 16 * 1024


def _bounded_data(value: dict[str, Any]) -> dict[str, Any]:
    if len(orjson.dumps(value)) > MAX_BROADCAST_DATA_BYTES:
        raise ValueError(f"data must encode to at most {MAX_BROADCAST_DATA_BYTES} bytes of JSON")
    return value


BoundedData = Annotated[dict[str, Any], AfterValidator(_bounded_data)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MarkReadIn(Strict):
    """``{"ids": [...]}`` or ``{"all": true}``."""

    ids: list[NotificationId] | None = Field(default=None, max_length=1000)
    all: StrictBool = False

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if self.all == (self.ids is not None):
            raise ValueError("give either 'ids' or 'all': true")
        return self


class CreateNotificationsIn(Strict):
    user_ids: list[UserId] = Field(min_length=1)
    title: str
    body: str
    category: Annotated[str, StringConstraints(max_length=64)] | None = None
    data: dict[str, Any] | None = None
    link: str | None = None
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


class BroadcastIn(Strict):
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    body: Annotated[str, StringConstraints(max_length=5000)]
    data: BoundedData = Field(default_factory=dict)


Id = Annotated[str | int, Field(union_mode="left_to_right")]
ClientMessageId = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class SendMessageIn(Strict):
    """``message:send`` / ``POST /api/messages/send/``: to a user, or into a conversation."""

    to_user_id: UserId | None = None
    conversation_id: Id | None = None
    body: str
    client_msg_id: ClientMessageId | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.to_user_id is None) == (self.conversation_id is None):
            raise ValueError("give exactly one of 'to_user_id' or 'conversation_id'")
        return self


class RestSendMessageIn(Strict):
    to_user_id: UserId
    body: str
    client_msg_id: ClientMessageId | None = None


class TypingIn(Strict):
    conversation_id: Id
    typing: StrictBool


class MessageReadIn(Strict):
    conversation_id: Id
    message_id: Id


class RestReadIn(Strict):
    message_id: Id


class SendEmailIn(Strict):
    """``POST /api/emails/send/``: the seed task's arguments (``tenant_id`` optional)."""

    tenant_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    to_email: Annotated[str, StringConstraints(min_length=3, max_length=320)]
    subject: Annotated[str, StringConstraints(max_length=998)] | None = None
    template_key: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    context: BoundedData = Field(default_factory=dict)
