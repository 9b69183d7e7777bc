"""slyker's request class: JSON bodies must say they are JSON, and are parsed strictly. And
its WebSocket connection class: Quart's, with a receive queue that costs nothing while idle."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any

from quart import Request
from quart.asgi import ASGIWebsocketConnection
from quart.utils import cancel_tasks, raise_task_exceptions
from werkzeug.exceptions import RequestEntityTooLarge

from slyker.errors import APIError
from slyker.validation import BadJSON, parse_json_body, view_checks_own_text

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, WebsocketScope
    from quart import Quart


class APIRequest(Request):
    @property
    def blueprints(self) -> list[str]:
        """Quart's answer, computed once per matched rule: Quart asks for it three times per
        request (before, after and teardown hooks) and each time re-derives it from the
        endpoint (issue 12). Quart's own list is shared too (``_split_blueprint_path`` is
        cached), so callers already treat it as read-only."""
        rule = self.url_rule
        cached = self.__dict__.get("_slyker_blueprints")
        if cached is None or cached[0] is not rule:
            cached = self.__dict__["_slyker_blueprints"] = (rule, super().blueprints)
        return cached[1]  # type: ignore[no-any-return]

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """As Quart's, but a body that is not declared ``application/json`` is a 415, and
        the body is parsed by :func:`slyker.validation.parse_json_body`: not UTF-8, nested
        too deep, not JSON or with text the database cannot store (NUL, lone surrogates) is
        a 400 that says which, never a 500. Every JSON body (quart-schema's
        ``validate_request`` included) is read here.

        So no cross-site "simple" request (form or text/plain, sent without a preflight)
        can ever reach an endpoint that takes JSON.
        """
        if not (force or silent or self.is_json):
            await self.discard_body()
            raise APIError(415, "Content-Type must be application/json.")
        if cache and self._cached_json[silent] is not Ellipsis:
            return self._cached_json[silent]
        if not (force or self.is_json):
            return None
        data = await self.get_data(cache=cache, as_text=False)
        try:
            result = parse_json_body(data, check_text=not view_checks_own_text())
        except (BadJSON, APIError) as error:
            if not silent:
                raise self._json_error(error) from None
            result = None
        if cache:
            self._cached_json[silent] = result
        return result

    @staticmethod
    def _json_error(error: BadJSON | APIError) -> APIError:
        if isinstance(error, APIError):
            return error
        return APIError(400, str(error), code="invalid_json")

    async def discard_body(self) -> None:
        """Read (at most MAX_CONTENT_LENGTH of) a body before refusing the request.

        Hypercorn closes a keep-alive connection, without ``Connection: close``, when the
        response is complete before the request body was read; the browser's next request
        on that connection then fails.
        """
        with contextlib.suppress(RequestEntityTooLarge):
            await self.get_data(cache=False)

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise APIError(400, "Request body is not valid JSON.", code="invalid_json")


class WebsocketInbox:
    """An unbounded FIFO with waiting getters: what Quart's WebSocket connection uses an
    ``asyncio.Queue`` for (frames from the client, read by ``websocket.receive()``), without
    its three deques and an ``Event`` made up front (3.3 KiB per socket, every idle chat
    widget included). Nothing is allocated until a frame arrives or someone waits; the frame
    deque is dropped again once empty. Same semantics as ``asyncio.Queue`` (no maxsize): a
    getter that is cancelled after being woken passes the wake-up on."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def put_nowait(self, item: Any) -> None:
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(item)
        self._wake_next()

    def get_nowait(self) -> Any:
        items = self._items
        if not items:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            self._items = None
        return item

    async def get(self) -> Any:
        while not self._items:
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()  # just in case getter is not done yet
                getters = self._getters
                if getters is not None:
                    with contextlib.suppress(ValueError):
                        getters.remove(getter)
                    if not getters:
                        self._getters = None
                if self._items and not getter.cancelled():
                    self._wake_next()  # woken, then cancelled: the next getter takes the item
                raise
        return self.get_nowait()

    def _wake_next(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                break
        if not getters:
            self._getters = None


class WebsocketConnection(ASGIWebsocketConnection):
    """Quart's WebSocket connection with a :class:`WebsocketInbox` as its receive queue, and
    the handler run in the connection's own task: Quart makes two tasks (handler, receiver)
    and waits for the first to finish from a third, per socket for its whole life."""

    def __init__(self, app: Quart, scope: WebsocketScope) -> None:
        super().__init__(app, scope)
        # Quart's asyncio.Queue is dropped at once (the handshake's only cost of it), so an
        # idle socket holds only the inbox.
        self.queue = WebsocketInbox()  # type: ignore[assignment]

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """As Quart's: the client's frames are read into the queue by a task of their own;
        when the client leaves (or reading fails) the handler is cancelled, and when the
        handler ends the reader is; a failure of either is raised. Only the handler runs
        here, in this task, instead of in one more."""
        websocket = self._create_websocket_from_scope(send)
        this_task = asyncio.current_task()
        assert this_task is not None
        handling = True
        stopped_by_reader = False

        def reader_ended(_: asyncio.Task[None]) -> None:
            nonlocal stopped_by_reader
            if handling:
                stopped_by_reader = True
                this_task.cancel()

        reader = asyncio.ensure_future(self.handle_messages(receive))
        reader.add_done_callback(reader_ended)
        try:
            await self.handle_websocket(websocket, send)
        except asyncio.CancelledError:
            # Our own cancellation only (the client left): swallowed, as Quart's cancelling of
            # its handler task is. Any other cancellation of this task goes on.
            if not stopped_by_reader or this_task.uncancel() > 0:
                raise
        finally:
            handling = False
            reader.remove_done_callback(reader_ended)
        if not reader.done():
            await cancel_tasks({reader})
        raise_task_exceptions({reader})
