"""Moving one user between databases: their rows out as a ``ProfileExport``, and an export back in as a new user.

The file format and its validation live in ``profiles.exchange``, which stays free of SQLAlchemy (the reward
trainer reads files with it); this module maps the format to and from the tables. An export holds no derived data
(vectors, the index): an import embeds the texts again, before its one write transaction, so a failed import leaves
nothing behind and a forget that happens meanwhile is not undone.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import insert, select

from profiles.catalog import PreferenceCatalog
from profiles.embedders import Embedder, encode_in_batches, encode_normalised
from profiles.errors import UserExistsError
from profiles.exchange import (
    ExportedConversation,
    ExportedFeedback,
    ExportedMessage,
    ExportedRewardHead,
    ExportedSetting,
    ProfileExport,
)
from profiles.feedback import feedback_texts
from profiles.ids import validate_user_id
from profiles.messages import embedding_rows
from profiles.models import (
    Conversation,
    Feedback,
    Message,
    MessageEmbedding,
    PreferenceSetting,
    RewardHeadRow,
    User,
)
from profiles.transactions import Transactions, bump_generation, require_user, to_db_time, user_pk
from profiles.validation import check_text_size


def export_user(transactions: Transactions, user_id: str) -> ProfileExport:
    """Everything stored about the user, in the versioned export format, read in one transaction."""
    with transactions.read() as session:
        pk = require_user(session, user_id)
        user = session.get_one(User, pk)
        conversations = (
            session.execute(select(Conversation).where(Conversation.user_id == pk).order_by(Conversation.id))
            .scalars()
            .all()
        )
        messages = (
            session.execute(
                select(Message)
                .where(Message.user_id == pk)
                .order_by(Message.conversation_id, Message.created_at, Message.id)
            )
            .scalars()
            .all()
        )
        feedback = (
            session.execute(select(Feedback).where(Feedback.user_id == pk).order_by(Feedback.created_at, Feedback.id))
            .scalars()
            .all()
        )
        settings = (
            session.execute(
                select(PreferenceSetting).where(PreferenceSetting.user_id == pk).order_by(PreferenceSetting.dimension)
            )
            .scalars()
            .all()
        )
        heads = (
            session.execute(select(RewardHeadRow).where(RewardHeadRow.user_id == pk).order_by(RewardHeadRow.name))
            .scalars()
            .all()
        )
    refs: dict[int, int] = {}
    by_conversation: dict[int, list[ExportedMessage]] = {conversation.id: [] for conversation in conversations}
    for message in messages:
        refs[message.id] = len(refs) + 1
        by_conversation[message.conversation_id].append(
            ExportedMessage(ref=refs[message.id], role=message.role, text=message.text, created_at=message.created_at)
        )
    return ProfileExport(
        user_id=user.name,
        created_at=user.created_at,
        conversations=[
            ExportedConversation(
                title=conversation.title,
                created_at=conversation.created_at,
                messages=by_conversation[conversation.id],
            )
            for conversation in conversations
        ],
        feedback=[
            ExportedFeedback(
                prompt=item.prompt,
                response=item.response,
                rating=item.rating,
                chosen=item.chosen,
                rejected=item.rejected,
                message_ref=refs.get(item.message_id) if item.message_id else None,
                created_at=item.created_at,
            )
            for item in feedback
        ],
        preferences=[
            ExportedSetting(dimension=item.dimension, pole=item.pole, updated_at=item.updated_at) for item in settings
        ],
        reward_heads=[
            ExportedRewardHead(name=head.name, data=head.data, meta=head.meta, created_at=head.created_at)
            for head in heads
        ],
    )


def import_user(
    transactions: Transactions,
    embedder: Embedder,
    catalog: PreferenceCatalog,
    data: ProfileExport,
    *,
    user_id: str | None,
    max_chars: int,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Create a user from an export (as ``user_id`` when given) in one transaction. Refuses an existing user,
    settings ``catalog`` does not know and texts over ``max_chars``. Returns the user id."""
    name = validate_user_id(user_id, where="the user id to import as") if user_id is not None else data.user_id
    validate_user_id(name)
    for setting in data.preferences:
        catalog.dimension(setting.dimension).pole(setting.pole)
    messages = [message for conversation in data.conversations for message in conversation.messages]
    for message in messages:
        check_text_size(message.text, max_chars, f"message ref {message.ref}")
    for number, item in enumerate(data.feedback, start=1):
        for text in (item.prompt, item.response, item.chosen, item.rejected):
            if text is not None:
                check_text_size(text, max_chars, f"feedback {number}")
    message_vectors = encode_in_batches(embedder, [message.text for message in messages], progress)
    feedback_vectors = [
        encode_normalised(embedder, feedback_texts(item.prompt, item.response, item.chosen, item.rejected))
        for item in data.feedback
    ]
    with transactions.write() as session:
        if user_pk(session, name) is not None:
            raise UserExistsError(name)
        pk = session.execute(
            insert(User).values(name=name, created_at=to_db_time(data.created_at)).returning(User.id)
        ).scalar_one()
        generation = bump_generation(session)
        ids: dict[int, int] = {}
        for conversation in data.conversations:
            conversation_id = session.scalar(
                insert(Conversation)
                .values(user_id=pk, title=conversation.title, created_at=to_db_time(conversation.created_at))
                .returning(Conversation.id)
            )
            if not conversation.messages:
                continue
            new_ids = session.scalars(
                insert(Message).returning(Message.id, sort_by_parameter_order=True),
                [
                    {
                        "conversation_id": conversation_id,
                        "user_id": pk,
                        "role": message.role,
                        "text": message.text,
                        "created_at": to_db_time(message.created_at),
                    }
                    for message in conversation.messages
                ],
            )
            ids.update(zip((message.ref for message in conversation.messages), new_ids, strict=True))
        if messages:
            session.execute(
                insert(MessageEmbedding),
                embedding_rows(embedder, pk, generation, [ids[message.ref] for message in messages], message_vectors),
            )
        for item, vectors in zip(data.feedback, feedback_vectors, strict=True):
            session.execute(
                insert(Feedback).values(
                    user_id=pk,
                    message_id=ids.get(item.message_ref) if item.message_ref else None,
                    prompt=item.prompt,
                    response=item.response,
                    rating=item.rating,
                    chosen=item.chosen,
                    rejected=item.rejected,
                    created_at=to_db_time(item.created_at),
                    embedder=embedder.name,
                    vectors=vectors.tobytes(),
                )
            )
        for setting in data.preferences:
            session.execute(
                insert(PreferenceSetting).values(
                    user_id=pk,
                    dimension=setting.dimension,
                    pole=setting.pole,
                    updated_at=to_db_time(setting.updated_at),
                )
            )
        for head in data.reward_heads:
            session.execute(
                insert(RewardHeadRow).values(
                    user_id=pk,
                    name=head.name,
                    data=head.data,
                    meta=head.meta,
                    created_at=to_db_time(head.created_at),
                )
            )
    return name
