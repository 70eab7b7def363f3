"""The campaign book: every fleet's campaigns as the release repository signs them.

:meth:`CampaignBook.create` validates a campaign against the fleet it targets (a known fleet,
a trigger over signals its task's frames carry, a positive budget, an expiry ahead) and signs
the fleet's new list; the same campaign asked again while it runs is not signed twice.
:meth:`CampaignBook.stop` marks one stopped (kept in the list, so a device that saw it learns
that it ended); :meth:`CampaignBook.list` reads what is signed, and :func:`campaign_row` is how
``fieldloop campaign list`` and ``fieldloop status`` show one.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from actuation.agent.campaigns import campaign_signals
from actuation.contract import Budget, Campaign, Campaigns, Fleet, Trigger, campaigns_path
from actuation.errors import CampaignError
from fieldloop.datasets import layout

logger = logging.getLogger(__name__)

_DURATION = re.compile(r"^(?P<n>\d+(\.\d+)?)(?P<unit>[smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``; CampaignError otherwise."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise CampaignError(f"expiry {text!r}: write a number and a unit s, m, h or d (e.g. 24h, 7d)", "expires")
    return timedelta(**{_UNITS[m["unit"]]: float(m["n"])})


@dataclass(frozen=True)
class Created:
    """What :meth:`CampaignBook.create` did: the campaign, and whether a new list was signed."""

    campaign: Campaign
    signed: bool


class CampaignBook:
    """The campaigns of the fleets ``repository`` serves.

    Args:
        repository: the release repository (:class:`actuation.release.repository.Repository`).
        clock: the current time (tests move it).
    """

    def __init__(self, repository: Any, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.repository = repository
        self.clock = clock

    def _fleet(self, name: str) -> Fleet:
        try:
            return self.repository.fleets.get(name)
        except KeyError as e:
            raise CampaignError(str(e.args[0]), "fleet") from e

    def campaigns(self, fleet: str) -> list[Campaign]:
        signed = self.repository.campaigns(fleet)
        return list(signed.campaigns) if signed else []

    def list(self, fleet: str | None = None) -> list[Campaign]:
        """Every signed campaign (of ``fleet``), newest first."""
        names = [self._fleet(fleet).name] if fleet else [f.name for f in self.repository.fleets.fleet]
        found = [c for name in names for c in self.campaigns(name)]
        return sorted(found, key=lambda c: c.created_at, reverse=True)

    def create(
        self,
        fleet: str,
        trigger: str,
        max_per_hour: int = 60,
        max_bytes_per_day: int = 10 * 1024 * 1024,
        window_before: int = 10,
        window_after: int = 5,
        expires_in: timedelta = timedelta(hours=24),
    ) -> Created:
        """Sign a new campaign into ``fleet``'s list; an identical one still running is returned unsigned.

        Raises:
            CampaignError: an unknown fleet, a bad trigger, a budget or window out of range, an
                expiry that is not ahead; ``field`` names which.
        """
        target = self._fleet(fleet)
        parsed = self._trigger(target, trigger)
        if max_per_hour <= 0 or max_bytes_per_day <= 0:
            raise CampaignError(
                f"budget: {max_per_hour} windows per hour and {max_bytes_per_day} bytes per day; both must be > 0",
                "budget",
            )
        if expires_in <= timedelta(0):
            raise CampaignError(f"expiry: {expires_in} is in the past; give a duration ahead (e.g. 24h)", "expires")
        if not 1 <= window_before <= 100 or not 0 <= window_after <= 100:
            raise CampaignError("window: 1-100 frames before (the trigger's own included), 0-100 after", "window")
        budget = Budget(max_per_hour=max_per_hour, max_bytes_per_day=max_bytes_per_day)
        with self.repository.lock():  # the list read and the list signed are one edit: no campaign lost or doubled
            now = self.clock()
            current = self.campaigns(target.name)
            for c in current:
                if c.active(now) and (c.trigger.expression, c.budget, c.window_before, c.window_after) == (
                    parsed.expression, budget, window_before, window_after,
                ):  # fmt: skip
                    return Created(c, signed=False)
            campaign = Campaign(
                id=_campaign_id(target.name, parsed.expression, now),
                fleet=target.name,
                trigger=parsed,
                budget=budget,
                window_before=window_before,
                window_after=window_after,
                created_at=now,
                expires_at=now + expires_in,
            )
            self._sign(target.name, [*current, campaign], now)
            return Created(campaign, signed=True)

    def stop(self, campaign_id: str) -> tuple[Campaign, bool]:
        """Mark the campaign stopped and sign its fleet's list; (the campaign, whether it changed)."""
        with self.repository.lock():
            for fleet in self.repository.fleets.fleet:
                current = self.campaigns(fleet.name)
                found = next((c for c in current if c.id == campaign_id), None)
                if found is None:
                    continue
                if found.stopped:
                    return found, False
                now = self.clock()
                stopped = found.model_copy(update={"stopped": True, "stopped_at": now})
                self._sign(fleet.name, [stopped if c.id == campaign_id else c for c in current], now)
                return stopped, True
        raise CampaignError(f"no campaign {campaign_id!r}; `fieldloop campaign list` shows them", "id")

    def _trigger(self, fleet: Fleet, text: str) -> Trigger:
        try:
            parsed = Trigger.parse(text)
        except ValueError as e:
            raise CampaignError(str(e), "trigger") from e
        known = campaign_signals(layout(fleet.task))
        if unknown := [s for s in parsed.signals if s not in known]:
            raise CampaignError(
                f"trigger {text!r}: {', '.join(unknown)} is not a signal of fleet {fleet.name}'s frames "
                f"({fleet.task}: {', '.join(known)}; or ood, disagreement, fallback)",
                "trigger",
            )
        return parsed

    def _sign(self, fleet: str, campaigns: list[Campaign], now: datetime) -> None:
        body = Campaigns(fleet=fleet, issued_at=now, campaigns=campaigns).model_dump_json(indent=1).encode()
        self.repository.sign(fleet, {campaigns_path(fleet): body}, {"kind": "campaigns"})
        logger.info("signed %d campaign(s) for fleet %s", len(campaigns), fleet)


def ask_for_hard_cases(repository: Any, fleet: str, clock: Callable[[], datetime] | None = None) -> Created | None:
    """Sign the campaign ``fleet``'s rollout policy asks for while a new version meets it
    (:class:`actuation.rollout.policy.CampaignPolicy`); None when the policy asks for none.

    Every release and rollout calls it, so the cases a version met come home for the next
    fine-tune; the same campaign still running is not signed again (:meth:`CampaignBook.create`).
    """
    from actuation.rollout.policy import load_policy

    try:
        wanted = load_policy(fleet).campaign
    except FileNotFoundError:
        return None
    if wanted is None:
        return None
    book = CampaignBook(repository, clock) if clock else CampaignBook(repository)
    created = book.create(
        fleet,
        wanted.trigger,
        wanted.max_per_hour,
        wanted.max_bytes_per_day,
        wanted.window_before,
        wanted.window_after,
        parse_duration(wanted.expires),
    )
    if created.signed:
        logger.info("fleet %s asked for hard cases: campaign %s (%s)", fleet, created.campaign.id, wanted.trigger)
    return created


def campaign_state(c: Campaign, now: datetime) -> str:
    """``stopped``, ``expired`` or ``active`` at ``now``."""
    return "stopped" if c.stopped else ("expired" if c.expires_at <= now else "active")


def campaign_row(c: Campaign, now: datetime) -> dict[str, Any]:
    """One campaign as ``fieldloop campaign list --json`` and ``fieldloop status`` show it."""
    return {
        "id": c.id,
        "fleet": c.fleet,
        "state": campaign_state(c, now),
        "trigger": c.trigger.expression,
        "kind": c.trigger.kind,
        "max_per_hour": c.budget.max_per_hour,
        "max_bytes_per_day": c.budget.max_bytes_per_day,
        "window_before": c.window_before,
        "window_after": c.window_after,
        "created_at": c.created_at.isoformat(),
        "expires_at": c.expires_at.isoformat(),
    }


def _campaign_id(fleet: str, trigger: str, now: datetime) -> str:
    digest = hashlib.sha256(f"{fleet}\0{trigger}\0{now.isoformat()}".encode()).hexdigest()[:6]
    return f"{fleet}-{now:%Y%m%d%H%M}-{digest}"
