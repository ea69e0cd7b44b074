"""Who a bot answers: allowlists of users and channels, deny by default."""

from __future__ import annotations

from dataclasses import dataclass

EVERYONE = "*"


@dataclass(frozen=True)
class AccessPolicy:
    """A message is answered if its sender is an allowed user or it was sent in an allowed channel.

    With both lists empty — the default — nobody is answered. `"*"` in a list
    opts in to everyone (any user, or any channel), and has to be written on
    purpose.
    """

    users: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()

    @classmethod
    def of(cls, users: list[str], channels: list[str]) -> AccessPolicy:
        """A policy from the configured lists (ids as strings)."""
        return cls(frozenset(str(user) for user in users), frozenset(str(channel) for channel in channels))

    def allows(self, user_id: str, channel_id: str) -> bool:
        """Whether `user_id` may talk to the bot in `channel_id`."""
        return (
            EVERYONE in self.users or user_id in self.users or EVERYONE in self.channels or channel_id in self.channels
        )

    @property
    def answers_nobody(self) -> bool:
        """True while nothing is configured (worth a warning at start)."""
        return not self.users and not self.channels


def refusal(user_id: str) -> str:
    """What a stranger is told, once."""
    return (
        "Sorry, I only answer people my administrator has allowed. "
        f"If you should have access, ask them to add your user id `{user_id}`."
    )
