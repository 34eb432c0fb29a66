"""Listener modules, registered by ``bot.app.create_app`` (the Bolt starter template's
layout): ``commands`` answers `/kpi`, ``actions`` handles the buttons on its replies."""
from __future__ import annotations

from slack_bolt import App

from . import actions, commands


def register(app: App, deps) -> None:
    commands.register(app, deps)
    actions.register(app, deps)
