"""Feedback in the store: recording a rating or a chosen/rejected pair, listing it as training pairs, and handing
it to preference inference.

Each feedback row keeps the vectors of its texts (under the embedder that made them), so inference does not
re-embed them on every call. Which texts those are, and in which order, is ``feedback_texts``: recording, importing
and inference all use it, so the stored vectors always line up with what inference reads back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import insert, select

from profiles.embedders import Embedder, encode_normalised
from profiles.errors import InvalidInputError
from profiles.exchange import as_utc
from profiles.inference import FeedbackRow
from profiles.models import Feedback, Message
from profiles.records import FeedbackPair
from profiles.transactions import Transactions, ensure_user, from_db_time, now, require_user, user_pk
from profiles.validation import check_not_blank, check_text_size, feedback_input


def feedback_texts(prompt: str, response: str | None, chosen: str | None, rejected: str | None) -> list[str]:
    """The texts embedded for one feedback item, in this order: the prompt, then the chosen and the rejected
    response of a pair, or the rated response."""
    if chosen is not None:
        return [prompt, chosen, rejected or ""]
    return [prompt, response or ""]


def record_feedback(
    transactions: Transactions,
    embedder: Embedder,
    user_id: str,
    *,
    prompt: str,
    response: str | None,
    rating: float | None,
    chosen: str | None,
    rejected: str | None,
    message_id: int | None,
    max_chars: int,
) -> int:
    """``ProfileStore.add_feedback``: validate (``profiles.validation``), resolve a rated message's text, embed
    outside the transaction, then insert. Returns the feedback id."""
    item = feedback_input(prompt=prompt, response=response, rating=rating, chosen=chosen, rejected=rejected)
    for what, text in (
        ("prompt", prompt),
        ("response", response),
        ("chosen response", chosen),
        ("rejected response", rejected),
    ):
        if text is not None:
            check_text_size(text, max_chars, what)
    with transactions.read() as session:
        pk = user_pk(session, user_id)
        if message_id is not None:
            message = session.execute(select(Message.user_id, Message.text).where(Message.id == message_id)).first()
            if message is None or message.user_id != pk:
                raise InvalidInputError(f"message {message_id} does not belong to user {user_id!r}")
            if not item.is_pair and response is None:
                response = message.text
    if not item.is_pair:
        check_not_blank(response or "", "response")
    vectors = encode_normalised(embedder, feedback_texts(prompt, response, chosen, rejected))
    with transactions.write() as session:
        pk = ensure_user(session, user_id, pk)
        return session.execute(
            insert(Feedback)
            .values(
                user_id=pk,
                message_id=message_id,
                prompt=prompt,
                response=response,
                rating=None if item.rating is None else float(item.rating),
                chosen=chosen,
                rejected=rejected,
                created_at=now(),
                embedder=embedder.name,
                vectors=vectors.tobytes(),
            )
            .returning(Feedback.id)
        ).scalar_one()


def feedback_pairs(transactions: Transactions, user_id: str) -> list[FeedbackPair]:
    """Preference pairs for training a per-user reward: every chosen/rejected pair, plus, for ratings of the same
    prompt, each better-rated response over each worse-rated one."""
    with transactions.read() as session:
        pk = require_user(session, user_id)
        items = (
            session.execute(select(Feedback).where(Feedback.user_id == pk).order_by(Feedback.created_at, Feedback.id))
            .scalars()
            .all()
        )
    pairs = [
        FeedbackPair(
            prompt=item.prompt, chosen=item.chosen, rejected=item.rejected, created_at=from_db_time(item.created_at)
        )
        for item in items
        if item.chosen is not None
    ]
    rated: dict[str, list[tuple[float, Feedback]]] = {}
    for item in items:
        if item.rating is not None:
            rated.setdefault(item.prompt, []).append((item.rating, item))
    for prompt, group in rated.items():
        for better_rating, better in group:
            for worse_rating, worse in group:
                if better_rating > worse_rating and better.response != worse.response:
                    pairs.append(
                        FeedbackPair(
                            prompt=prompt,
                            chosen=better.response,
                            rejected=worse.response,
                            created_at=from_db_time(max(better.created_at, worse.created_at)),
                        )
                    )
    return pairs


def inference_rows(items: Sequence[Feedback], embedder: Embedder) -> list[FeedbackRow]:
    """Feedback as inference needs it; vectors stored under another embedder are re-embedded."""
    return [_inference_row(item, embedder) for item in items]


def _inference_row(item: Feedback, embedder: Embedder) -> FeedbackRow:
    texts = feedback_texts(item.prompt, item.response, item.chosen, item.rejected)
    if item.embedder == embedder.name and item.vectors is not None:
        vectors = np.frombuffer(item.vectors, np.float32).reshape(len(texts), -1)
    else:
        vectors = encode_normalised(embedder, texts)
    pair = item.chosen is not None
    return FeedbackRow(
        feedback_id=item.id,
        message_id=item.message_id,
        time=as_utc(item.created_at).timestamp(),
        text=item.chosen if item.chosen is not None else item.response or "",
        prompt=vectors[0],
        positive=vectors[1],
        negative=vectors[2] if pair else None,
        rating=1.0 if pair else float(item.rating or 0.0),
    )
