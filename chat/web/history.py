"""Chainlit data layer over `store.Store`: users, threads, steps, elements and feedback in ClickHouse.

Why ClickHouse and not Chainlit's SQL layers: otel-ai has exactly one database, and chat history
next to the telemetry lets feedback become eval cases with plain SQL (chat/feedback.py). Rows are
versioned (chat/versioned.py): an update reads the row, merges the change and writes a new version,
all under one asyncio lock, so Chainlit's concurrent create/update tasks apply in order.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from chainlit.data.base import BaseDataLayer
from chainlit.element import Element, ElementDict
from chainlit.step import StepDict
from chainlit.types import Feedback, PageInfo, PaginatedResponse, Pagination, ThreadDict, ThreadFilter
from chainlit.user import PersistedUser, User

from chat.versioned import latest, write
from store import Store

# Route (registered by chat.web.runtime) serving stored element content, e.g. charts of old threads.
ELEMENT_ROUTE = "/chat-files"
T = TypeVar("T")

_THREAD_COLUMNS = ["id", "created_at", "name", "user_id", "user_identifier", "tags", "metadata", "conversation"]
_FEEDBACK_COLUMNS = ["id", "thread_id", "step_id", "created_at", "value", "comment", "user_identifier"]


def _now() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str | None) -> datetime:
    """Chainlit's ISO timestamps ('...Z') as aware datetimes; now when missing or malformed."""
    if not value:
        return _now()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return _now()
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ClickHouseDataLayer(BaseDataLayer):
    """Chat persistence for Chainlit: a reload or a restart keeps every thread, chart and thumb."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = asyncio.Lock()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:  # noqa: ANN401
        return await asyncio.to_thread(fn, *args)

    async def _locked(self, fn: Callable[..., T], *args: Any) -> T:  # noqa: ANN401
        async with self._lock:
            return await asyncio.to_thread(fn, *args)

    # ---- users ---------------------------------------------------------------------------------

    def _get_user(self, identifier: str) -> PersistedUser | None:
        rows = latest(self.store, "chat_users", ["id", "identifier", "display_name", "metadata", "created_at"],
                      "identifier = {identifier:String}", key="identifier", identifier=identifier)
        if not rows:
            return None
        row = rows[0]
        return PersistedUser(
            id=row["id"], identifier=row["identifier"], createdAt=iso(row["created_at"]),
            display_name=row["display_name"] or None, metadata=json.loads(row["metadata"] or "{}"),
        )

    def _create_user(self, user: User) -> PersistedUser | None:
        if existing := self._get_user(user.identifier):
            return existing
        write(self.store, "chat_users", {
            "id": str(uuid.uuid4()), "identifier": user.identifier, "display_name": user.display_name or "",
            "metadata": json.dumps(user.metadata or {}, default=str), "created_at": _now(), "deleted": 0,
        })
        return self._get_user(user.identifier)

    async def get_user(self, identifier: str) -> PersistedUser | None:
        return await self._run(self._get_user, identifier)

    async def create_user(self, user: User) -> PersistedUser | None:
        return await self._locked(self._create_user, user)

    # ---- threads -------------------------------------------------------------------------------

    def _thread_row(self, thread_id: str) -> dict[str, Any] | None:
        rows = latest(self.store, "chat_threads", _THREAD_COLUMNS, "id = {id:String}", id=thread_id)
        return rows[0] if rows else None

    def _upsert_thread(self, thread_id: str, changes: dict[str, Any]) -> None:
        row = self._thread_row(thread_id) or {
            "id": thread_id, "created_at": _now(), "name": "", "user_id": "", "user_identifier": "", "tags": [],
            "metadata": "{}", "conversation": "",
        }
        row.pop("deleted", None)
        for key, value in changes.items():
            if value is None:
                continue
            if key == "metadata":
                merged = {**json.loads(row["metadata"] or "{}"), **value}
                row["metadata"] = json.dumps({k: v for k, v in merged.items() if v is not None}, default=str)
            elif key == "user_id":
                row["user_id"] = value
                users = latest(self.store, "chat_users", ["identifier"], "id = {id:String}", key="identifier",
                               id=value)
                row["user_identifier"] = users[0]["identifier"] if users else ""
            elif key == "name":
                row["name"] = str(value)[:200]
            else:
                row[key] = value
        write(self.store, "chat_threads", {**row, "deleted": int(changes.get("deleted") or 0)})

    def _ensure_thread(self, thread_id: str) -> None:
        if self._thread_row(thread_id) is None:
            self._upsert_thread(thread_id, {})

    async def update_thread(
        self,
        thread_id: str,
        name: str | None = None,
        user_id: str | None = None,
        metadata: dict | None = None,
        tags: list[str] | None = None,
    ) -> None:
        changes = {"name": name, "user_id": user_id, "metadata": metadata, "tags": tags}
        await self._locked(self._upsert_thread, thread_id, changes)

    async def save_conversation(self, thread_id: str, conversation_json: str) -> None:
        """Keep the agent's memory of this thread so follow-ups work after a reload or restart."""
        await self._locked(self._upsert_thread, thread_id, {"conversation": conversation_json})

    async def load_conversation(self, thread_id: str) -> str | None:
        row = await self._run(self._thread_row, thread_id)
        return (row or {}).get("conversation") or None

    async def get_thread_author(self, thread_id: str) -> str:
        row = await self._run(self._thread_row, thread_id)
        return (row or {}).get("user_identifier", "")

    async def delete_thread(self, thread_id: str) -> None:
        await self._locked(self._upsert_thread, thread_id, {"deleted": 1})

    @staticmethod
    def _thread_dict(row: dict[str, Any], steps: list[StepDict], elements: list[ElementDict]) -> ThreadDict:
        return ThreadDict(
            id=row["id"], createdAt=iso(row["created_at"]), name=row["name"] or None,
            userId=row["user_id"] or None, userIdentifier=row["user_identifier"] or None,
            tags=list(row["tags"]), metadata=json.loads(row["metadata"] or "{}"), steps=steps, elements=elements,
        )

    def _list_threads(self, pagination: Pagination, filters: ThreadFilter) -> PaginatedResponse[ThreadDict]:
        conditions = ["1"]
        params: dict[str, Any] = {}
        if filters.userId:
            conditions.append("user_id = {user_id:String}")
            params["user_id"] = filters.userId
        tail = []
        if filters.search:
            tail.append("positionCaseInsensitiveUTF8(name, {search:String}) > 0")
            params["search"] = filters.search
        if filters.feedback is not None:
            voted = {r["thread_id"] for r in latest(self.store, "chat_feedback", ["thread_id", "value"],
                                                     tail="AND value = {v:Int8}", v=filters.feedback)}
            tail.append("has({voted:Array(String)}, id)")
            params["voted"] = sorted(voted)
        if pagination.cursor and (cursor := self._thread_row(pagination.cursor)):
            tail.append("(created_at, id) < ({cursor_at:DateTime64(3, 'UTC')}, {cursor:String})")
            params.update(cursor_at=cursor["created_at"], cursor=cursor["id"])
        limit = max(1, min(pagination.first, 200))
        order = f"ORDER BY created_at DESC, id DESC LIMIT {limit + 1}"
        rows = latest(self.store, "chat_threads", _THREAD_COLUMNS, " AND ".join(conditions),
                      tail=" ".join(f"AND {t}" for t in tail) + " " + order, **params)
        page = rows[:limit]
        return PaginatedResponse(
            pageInfo=PageInfo(hasNextPage=len(rows) > limit, startCursor=page[0]["id"] if page else None,
                              endCursor=page[-1]["id"] if page else None),
            data=[self._thread_dict(r, [], []) for r in page],
        )

    async def list_threads(self, pagination: Pagination, filters: ThreadFilter) -> PaginatedResponse[ThreadDict]:
        return await self._run(self._list_threads, pagination, filters)

    def _get_thread(self, thread_id: str) -> ThreadDict | None:
        row = self._thread_row(thread_id)
        if row is None:
            return None
        feedback = {
            f["step_id"]: {"id": f["id"], "forId": f["step_id"], "value": f["value"], "comment": f["comment"] or None}
            for f in latest(self.store, "chat_feedback", _FEEDBACK_COLUMNS, "thread_id = {id:String}", id=thread_id)
        }
        steps: list[StepDict] = []
        for s in latest(self.store, "chat_steps", ["id", "doc", "created_at", "version"], "thread_id = {id:String}",
                        tail="ORDER BY created_at, version", id=thread_id):
            step: StepDict = json.loads(s["doc"])
            if s["id"] in feedback:
                step["feedback"] = feedback[s["id"]]  # type: ignore[typeddict-item]
            steps.append(step)
        elements: list[ElementDict] = []
        for e in latest(self.store, "chat_elements", ["id", "doc", "version"], "thread_id = {id:String}",
                        tail="ORDER BY version", id=thread_id):
            element: ElementDict = json.loads(e["doc"])
            element["url"] = f"{ELEMENT_ROUTE}/{thread_id}/{e['id']}"
            element["chainlitKey"] = None
            elements.append(element)
        return self._thread_dict(row, steps, elements)

    async def get_thread(self, thread_id: str) -> ThreadDict | None:
        return await self._run(self._get_thread, thread_id)

    # ---- steps ---------------------------------------------------------------------------------

    def _step(self, step_id: str) -> dict[str, Any] | None:
        rows = latest(self.store, "chat_steps", ["id", "thread_id", "doc"], "id = {id:String}",
                      include_deleted=True, id=step_id)
        return rows[0] if rows else None

    def _upsert_step(self, step_dict: StepDict, deleted: int = 0) -> None:
        existing = self._step(step_dict["id"])
        doc: dict[str, Any] = {**(json.loads(existing["doc"]) if existing else {}), **step_dict}
        doc.pop("feedback", None)
        thread_id = doc.get("threadId") or (existing["thread_id"] if existing else "")
        if not thread_id:
            return
        if not existing:
            self._ensure_thread(thread_id)
        write(self.store, "chat_steps", {
            "id": doc["id"], "thread_id": thread_id,
            "created_at": parse_time(doc.get("createdAt") or doc.get("start")),
            "doc": json.dumps(doc, default=str), "deleted": deleted,
        })

    async def create_step(self, step_dict: StepDict) -> None:
        await self._locked(self._upsert_step, step_dict)

    async def update_step(self, step_dict: StepDict) -> None:
        await self._locked(self._upsert_step, step_dict)

    async def delete_step(self, step_id: str) -> None:
        await self._locked(self._upsert_step, StepDict(id=step_id), 1)

    async def get_step(self, step_id: str) -> StepDict | None:
        row = await self._run(self._step, step_id)
        return json.loads(row["doc"]) if row else None

    async def get_favorite_steps(self, user_id: str) -> list[StepDict]:
        return []

    # ---- elements ------------------------------------------------------------------------------

    def _write_element(self, element: Element) -> None:
        content = element.content
        if content is None and element.path:
            with open(element.path, "rb") as f:
                content = f.read()
        if isinstance(content, bytes):
            try:
                content = content.decode()
            except UnicodeDecodeError:
                return  # binary files are not kept (uploads are off in this UI)
        if not element.thread_id:
            return
        self._ensure_thread(element.thread_id)
        doc = {k: v for k, v in element.to_dict().items() if v is not None}
        write(self.store, "chat_elements", {
            "id": element.id, "thread_id": element.thread_id, "for_id": element.for_id or "",
            "doc": json.dumps(doc, default=str), "content": content or "", "mime": element.mime or "text/plain",
            "deleted": 0,
        })

    async def create_element(self, element: Element) -> None:
        await self._locked(self._write_element, element)

    def _element_row(self, thread_id: str, element_id: str) -> dict[str, Any] | None:
        rows = latest(self.store, "chat_elements", ["id", "thread_id", "for_id", "doc", "content", "mime"],
                      "thread_id = {thread_id:String} AND id = {id:String}", thread_id=thread_id, id=element_id)
        return rows[0] if rows else None

    async def get_element(self, thread_id: str, element_id: str) -> ElementDict | None:
        row = await self._run(self._element_row, thread_id, element_id)
        if row is None:
            return None
        element: ElementDict = json.loads(row["doc"])
        element["url"] = f"{ELEMENT_ROUTE}/{thread_id}/{element_id}"
        return element

    async def get_element_content(self, thread_id: str, element_id: str) -> tuple[str, str] | None:
        """(content, mime) of a stored element, for the route that serves charts of old threads."""
        row = await self._run(self._element_row, thread_id, element_id)
        return (row["content"], row["mime"]) if row else None

    def _delete_element(self, element_id: str) -> None:
        rows = latest(self.store, "chat_elements", ["id", "thread_id", "for_id", "doc", "mime"],
                      "id = {id:String}", id=element_id)
        for row in rows:
            write(self.store, "chat_elements", {**row, "content": "", "deleted": 1})

    async def delete_element(self, element_id: str, thread_id: str | None = None) -> None:
        await self._locked(self._delete_element, element_id)

    # ---- feedback ------------------------------------------------------------------------------

    def _upsert_feedback(self, feedback: Feedback) -> str:
        step = self._step(feedback.forId)
        thread_id = feedback.threadId or (step["thread_id"] if step else "")
        # One feedback per answer: a second thumb on the same answer replaces the first.
        existing = latest(self.store, "chat_feedback", ["id"], "step_id = {step:String}", step=feedback.forId)
        feedback_id = feedback.id or (existing[0]["id"] if existing else str(uuid.uuid4()))
        thread = self._thread_row(thread_id) if thread_id else None
        write(self.store, "chat_feedback", {
            "id": feedback_id, "thread_id": thread_id, "step_id": feedback.forId, "created_at": _now(),
            "value": int(feedback.value), "comment": feedback.comment or "",
            "user_identifier": (thread or {}).get("user_identifier", ""), "deleted": 0,
        })
        return feedback_id

    async def upsert_feedback(self, feedback: Feedback) -> str:
        return await self._locked(self._upsert_feedback, feedback)

    def _delete_feedback(self, feedback_id: str) -> bool:
        rows = latest(self.store, "chat_feedback", _FEEDBACK_COLUMNS, "id = {id:String}", id=feedback_id)
        for row in rows:
            write(self.store, "chat_feedback", {**row, "deleted": 1})
        return bool(rows)

    async def delete_feedback(self, feedback_id: str) -> bool:
        return await self._locked(self._delete_feedback, feedback_id)

    # ---- misc ----------------------------------------------------------------------------------

    async def build_debug_url(self) -> str:
        return ""

    async def close(self) -> None:
        return None
