"""The chat area: the visitor and agent WebSockets, the staff REST API over conversations, and
the broker they share (in-process, or Redis with REDIS_URL), started and stopped with serving.

Draining on SIGTERM is the core's (:mod:`slyker.lifecycle`, which ``/ready/`` also answers
from); the chat sockets watch it and close with 1001. When serving ends the message writer
stores what is waiting, then closes its own SQLite connection (:mod:`slyker.chat.writer`).
"""

from __future__ import annotations

from quart import Quart

from slyker.blueprints import chat
from slyker.chat.service import BROKER_KEY, make_broker
from slyker.chat.writer import closing_writer
from slyker.settings import EXTENSION_KEY as SETTINGS_KEY


def init_app(app: Quart) -> None:
    broker = make_broker(app.extensions[SETTINGS_KEY].redis_url)
    app.extensions[BROKER_KEY] = broker
    app.before_serving(broker.start)
    app.after_serving(broker.stop)
    # The message writer stores what is waiting and closes its connection when serving ends.
    app.while_serving(closing_writer)
    app.register_blueprint(chat.blueprint)
