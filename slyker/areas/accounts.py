"""The accounts area: users, tokens, profiles and password resets; staff's client list."""

from __future__ import annotations

import click
from quart import Quart

from slyker.blueprints import accounts, clients
from slyker.cli import run_with_database
from slyker.models.accounts import Role
from slyker.services.accounts import create_user
from slyker.services.errors import ServiceError
from slyker.services.mail import announce_mail_mode
from slyker.settings import EXTENSION_KEY as SETTINGS_KEY
from slyker.settings import Settings


def init_app(app: Quart) -> None:
    settings: Settings = app.extensions[SETTINGS_KEY]
    announce_mail_mode(settings)  # only accounts sends mail (password resets)
    app.register_blueprint(accounts.blueprint)
    app.register_blueprint(clients.blueprint)
    register_commands(app, settings)


def register_commands(app: Quart, settings: Settings) -> None:
    @app.cli.command("create-user")
    @click.argument("email")
    @click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.STAFF.value)
    @click.option("--first-name", default="")
    @click.option("--last-name", default="")
    @click.password_option()
    def create_user_command(
        email: str, role: str, first_name: str, last_name: str, password: str
    ) -> None:
        """Create a user (staff by default) with a client profile."""

        async def work() -> None:
            try:
                user = await create_user(
                    email, password, Role(role), first_name=first_name, last_name=last_name
                )
            except ServiceError as error:
                raise click.ClickException(error.message) from None
            click.echo(f"created {user.user_type!s} {user.email} (id {user.id})")

        run_with_database(settings, work)
