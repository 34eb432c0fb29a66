"""Listener modules, registered by ``bot.app.create_app`` (the Bolt starter template's
layout): ``guard`` sees every request first (repeats, failures), ``commands`` answers
`/kpi`, ``actions`` handles the buttons on its replies, ``files`` imports the files shared
with the bot."""
from __future__ import annotations

from slack_bolt import App

from ..deps import Deps
from . import actions, commands, files, guard


def register(app: App, deps: Deps) -> None:
    guard.register(app, deps)
    commands.register(app, deps)
    actions.register(app, deps)
    files.register(app, deps)
