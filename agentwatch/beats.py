"""What the heartbeat server knows about one agent: its last beat, start and failure.

A `Beat` is both the stored row (the `heartbeats` table) and a delta: the server coalesces the
pings of one flush window into one `Beat` per agent and the store merges it into the row with the
same rules as `Beat.merged`, so a window of pings and the pings one by one end the same.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

__all__ = ["Beat", "PingKind"]


class PingKind(StrEnum):
    """What a ping says. `/ping/{id}` is a beat; jobs add start, fail and an exit code."""

    BEAT = "beat"  # alive (and, for a job, succeeded)
    START = "start"  # a job run began
    FAIL = "fail"  # a job run failed (`/fail` or a non-zero exit code)


@dataclass(frozen=True, slots=True)
class Beat:
    """The heartbeat record of one agent, or the pings of one flush window.

    `last_exit_code` is the code of the latest failure or exit-code ping (None after a bare
    `/fail`); a plain beat or a start leaves it as it was.
    """

    agent_id: str
    last_beat_at: datetime | None = None
    last_start_at: datetime | None = None
    last_fail_at: datetime | None = None
    last_exit_code: int | None = None
    beats: int = 0  # pings received (any kind)
    updated_at: datetime | None = None

    @classmethod
    def ping(cls, agent_id: str, kind: PingKind, at: datetime, exit_code: int | None = None) -> Beat:
        """One ping as a delta. An exit code 0 is a beat; any other code is a failure."""
        if kind is PingKind.BEAT:
            return cls(agent_id, last_beat_at=at, last_exit_code=exit_code, beats=1, updated_at=at)
        if kind is PingKind.START:
            return cls(agent_id, last_start_at=at, beats=1, updated_at=at)
        return cls(agent_id, last_fail_at=at, last_exit_code=exit_code, beats=1, updated_at=at)

    @property
    def sets_exit_code(self) -> bool:
        """True when this delta carries an exit code to store (a failure, or an exit code 0)."""
        return self.last_fail_at is not None or self.last_exit_code is not None

    @property
    def last_seen(self) -> datetime | None:
        """The latest sign of life of any kind: beat, start or failure."""
        seen = [t for t in (self.last_beat_at, self.last_start_at, self.last_fail_at) if t is not None]
        return max(seen) if seen else None

    @property
    def failing(self) -> bool:
        """A reported failure stands until the next beat."""
        if self.last_fail_at is None:
            return False
        return self.last_beat_at is None or self.last_fail_at > self.last_beat_at

    def merged(self, newer: Beat) -> Beat:
        """This record with the later delta `newer` applied (the store's upsert does the same in SQL)."""
        return replace(
            self,
            last_beat_at=_or(newer.last_beat_at, self.last_beat_at),
            last_start_at=_or(newer.last_start_at, self.last_start_at),
            last_fail_at=_or(newer.last_fail_at, self.last_fail_at),
            last_exit_code=newer.last_exit_code if newer.sets_exit_code else self.last_exit_code,
            beats=self.beats + newer.beats,
            updated_at=_or(newer.updated_at, self.updated_at),
        )


def _or(newer: datetime | None, older: datetime | None) -> datetime | None:
    # The newer write wins, as in SQL's COALESCE(excluded.x, x): one server's clock only moves on,
    # and tests may set a beat back in time on purpose.
    return newer if newer is not None else older
