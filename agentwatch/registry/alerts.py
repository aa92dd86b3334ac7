"""The `alerts:` section of a registry: chat routes, grouping, reminders and silences.

Validated with the rest of the registry; the alerting itself is agentwatch.alerts.

```yaml
alerts:
  group_threshold: 5        # more than this many agents in one cycle: one summary message
  repeat_interval: 4h       # remind about agents still down; 0s = never
  routes:
    - name: ops
      kind: slack            # slack | teams | discord | webhook
      url_env: SLACK_OPS_URL # or url_secret: <Prefect Secret block name>; never the URL itself
      match: {labels: {team: infra}}   # or {agents: [web-1]}; no match = every agent
  silences:
    - match: {agents: [batch-1]}
      cron: "0 2 * * *"      # every night at 02:00 ...
      duration: 1h           # ... for an hour
      timezone: Europe/Berlin
      reason: nightly rebuild
```

Route URLs are read when `agentwatch bootstrap` stores them in Prefect notification blocks; the
registry, events, artifacts and logs only ever name the variable or the Secret block.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from ..durations import Duration
from .base import ENV_NAME, SLUG

__all__ = ["AlertsConfig", "Route", "RouteKind", "Selector", "Silence"]

RouteKind = Literal["slack", "teams", "discord", "webhook"]
_BLOCK_NAME = re.compile(r"^[a-z0-9-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Selector(_Strict):
    """Which agents: any of `agents` (ids), or every agent carrying all of `labels`."""

    agents: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not self.agents and not self.labels

    def matches(self, agent_id: str, labels: dict[str, str]) -> bool:
        if agent_id in self.agents:
            return True
        return bool(self.labels) and all(labels.get(k) == v for k, v in self.labels.items())


class Route(_Strict):
    """A chat destination. Its URL is named (env var or Secret block), never written here."""

    name: str = Field(description="slug; the notification block is agentwatch-<name>")
    kind: RouteKind
    url_env: str | None = Field(None, description="environment variable holding the webhook URL at bootstrap")
    url_secret: str | None = Field(None, description="Prefect Secret block holding the webhook URL")
    match: Selector = Field(default_factory=Selector, description="which agents; empty = every agent")
    monitor: bool = Field(True, description="also receives 'monitor stalled' messages")

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG.match(v) or len(v) > 40:
            raise ValueError(f"{v!r} is not a slug (lowercase letters, digits and dashes, at most 40 characters)")
        return v

    @model_validator(mode="after")
    def _one_url_source(self) -> Route:
        if (self.url_env is None) == (self.url_secret is None):
            raise ValueError("give exactly one of url_env (an environment variable) or url_secret (a Secret block)")
        if self.url_env is not None and not ENV_NAME.match(self.url_env):
            raise ValueError(f"url_env must name an environment variable, not {self.url_env[:20]!r}...")
        if self.url_secret is not None and not _BLOCK_NAME.match(self.url_secret):
            raise ValueError("url_secret must name a Secret block (lowercase letters, digits and dashes)")
        return self

    def matches(self, agent_id: str, labels: dict[str, str]) -> bool:
        return self.match.is_empty or self.match.matches(agent_id, labels)


class Silence(_Strict):
    """A window with no alerts for some agents: `start`..`end` once, or `cron` + `duration` repeatedly.

    States are still probed and recorded during a silence; only the alert events are held back."""

    match: Selector
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    cron: str | None = None
    duration: Duration | None = None
    timezone: str = "UTC"
    reason: str = ""

    @field_validator("start", "end", mode="before")
    @classmethod
    def _utc_when_naive(cls, v: Any) -> Any:
        # YAML turns `2024-06-01 22:00` into a naive datetime: read it as UTC, as the store does.
        if isinstance(v, datetime) and v.tzinfo is None:
            return v.replace(tzinfo=UTC)
        if isinstance(v, str) and re.fullmatch(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?", v.strip()):
            return datetime.fromisoformat(v.strip()).replace(tzinfo=UTC)
        return v

    @model_validator(mode="after")
    def _one_window(self) -> Silence:
        if self.match.is_empty:
            raise ValueError("a silence needs `match` with agents or labels")
        once = self.start is not None or self.end is not None
        repeated = self.cron is not None or self.duration is not None
        if once == repeated:
            raise ValueError("give either `start` and `end`, or `cron` and `duration`")
        if once and (self.start is None or self.end is None or self.end <= self.start):
            raise ValueError("`start` and `end` are both needed, and `end` must be after `start`")
        if repeated:
            if self.cron is None or self.duration is None or self.duration <= timedelta(0):
                raise ValueError("`cron` and a `duration` of more than 0s are both needed")
            try:
                zone = ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone {self.timezone!r}") from None
            try:
                next(CronSim(self.cron, datetime.now(zone)))
            except (CronSimError, StopIteration) as exc:
                raise ValueError(f"not a cron expression: {self.cron!r} ({exc})") from None
        return self

    def active(self, now: datetime) -> bool:
        """True when `now` falls inside this silence's window."""
        if self.start is not None and self.end is not None:
            return self.start <= now < self.end
        assert self.cron is not None and self.duration is not None
        # The window that could cover `now` started after now - duration: the first cron tick
        # after that instant (CronSim yields ticks strictly after its start) must not be later
        # than now. Evaluated in the silence's zone so "02:00" means local time across DST.
        local = now.astimezone(ZoneInfo(self.timezone))
        tick = next(CronSim(self.cron, local - self.duration), None)
        return tick is not None and tick <= local


class AlertsConfig(_Strict):
    """Routes, noise control and silences; every field has a default."""

    routes: list[Route] = Field(default_factory=list)
    group_threshold: int = Field(5, ge=1, le=10_000, description="more agents than this in one cycle: one message")
    repeat_interval: Duration = Field(timedelta(hours=4), description="reminder for agents still down; 0s = off")
    silences: list[Silence] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_routes(self) -> AlertsConfig:
        names = [r.name for r in self.routes]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"duplicate route name(s): {', '.join(dups)}")
        return self

    def routes_for(self, agent_id: str, labels: dict[str, str]) -> tuple[str, ...]:
        """Names of the routes that carry this agent's alerts."""
        return tuple(r.name for r in self.routes if r.matches(agent_id, labels))

    def silence_for(self, agent_id: str, labels: dict[str, str], now: datetime) -> Silence | None:
        """The first silence that covers this agent now, or None."""
        return next((s for s in self.silences if s.match.matches(agent_id, labels) and s.active(now)), None)

    def named_agents(self) -> list[tuple[str, str]]:
        """(field path, agent id) for every agent id the section names, for the registry to check."""
        named = [(f"alerts.routes.{r.name}.match.agents", a) for r in self.routes for a in r.match.agents]
        named += [(f"alerts.silences.{i}.match.agents", a) for i, s in enumerate(self.silences) for a in s.match.agents]
        return named
