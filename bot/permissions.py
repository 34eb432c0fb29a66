"""Who may change settings: the users and user groups in KPIBOT_ADMINS, else the
workspace's admins and owners."""
from __future__ import annotations

import logging

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)


def is_admin(client: WebClient, admins: frozenset[str], user_id: str) -> bool:
    """A user in KPIBOT_ADMINS (directly or through a listed user group); when it is
    unset, a workspace admin or owner."""
    if admins:
        if user_id in admins:
            return True
        for group in sorted(a for a in admins if a.startswith("S")):
            try:
                if user_id in client.usergroups_users_list(usergroup=group).get("users", []):
                    return True
            except SlackApiError as exc:
                log.warning("could not read user group %s: %s", group, exc.response.get("error"))
        return False
    try:
        user = client.users_info(user=user_id)["user"]
    except SlackApiError as exc:
        log.warning("could not check whether %s is an admin: %s", user_id,
                    exc.response.get("error"))
        return False
    return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))
