"""The device-side release of secret streams: only DP aggregates leave the site.

Raw ``secret`` records (worker audio features) stay in the device's memory. This module
turns a batch of them into ``derived`` records for the stream's DP contract, which the
edge producer may send like any other stream::

    release = SecretStreamRelease(contracts["worker-audio-acme-steel"],
                                  contracts["worker-audio-dp-acme-steel"],
                                  ledger=BudgetLedger(SqliteLedgerStore(state_dir / "dp_ledger.db"), Budget(8.0)),
                                  site=device_id)
    for record in release.release(buffered, now_ms=now_ms):
        producer.send("worker-audio-dp-acme-steel", device_id, record)

Per tumbling window of ``window_s`` seconds it releases

* ``worker_count``: the number of workers heard (each worker counted once: bound 1);
* ``mean_db_level``: the mean sound level, each worker contributing at most
  ``readings_per_worker`` readings, clamped to ``db_bounds``.

The privacy unit is the worker. Every release is charged to the device-local ledger
under the site (every worker may appear in every window, so the site's total is what any
worker can lose per period) before it is returned; a batch that does not fit the
remaining budget is refused whole. Re-running a window returns the value recorded the
first time, without spending again. Output records carry only the fields of
``worker_audio_dp.v1``: no worker id, no MFCC, no raw reading.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fieldloop.classes import DataClass
from fieldloop.contracts import DataContract
from refinement.dp import DpQuery
from refinement.errors import BudgetExceededError, RefinementError
from refinement.ledger import DEFAULT_TZ, BudgetLedger, month_of

logger = logging.getLogger(__name__)

SOURCE_STREAM = "worker_audio"
TARGET_STREAM = "worker_audio_dp"
# The fields of worker_audio_dp.v1, and nothing else, leave the device.
OUTPUT_FIELDS = ("site", "window_start", "window_s", "metric", "value", "epsilon", "delta", "contribution_bound")


class EdgeReleaseConfig(BaseModel):
    """How a device releases its worker audio; validated before any record is read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: int = Field(300, ge=10, le=86400, description="length of a release window (seconds)")
    db_bounds: tuple[float, float] = Field((30.0, 130.0), description="sound levels are clamped to this range (dB)")
    readings_per_worker: int = Field(
        10, ge=1, le=10000, description="most readings one worker adds to a window's mean_db_level (count)")
    mean_epsilon: float = Field(0.5, gt=0, description="ε of one window's mean_db_level")
    count_epsilon: float = Field(0.25, gt=0, description="ε of one window's worker_count")
    mechanism: Literal["laplace", "gaussian"] = Field("laplace", description="noise: laplace (pure ε) or gaussian")
    delta: float = Field(0.0, ge=0, lt=1, description="δ of each release; > 0 only with gaussian")
    period_tz: str = Field(DEFAULT_TZ, description="time zone of the monthly budget periods (IANA name)")

    @model_validator(mode="after")
    def _consistent(self) -> EdgeReleaseConfig:
        lower, upper = self.db_bounds
        if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
            raise ValueError(f"db_bounds must be finite with lower < upper, got {self.db_bounds}")
        if self.mechanism == "laplace" and self.delta != 0:
            raise ValueError("delta must be 0 with the laplace mechanism (pure ε); use mechanism='gaussian' for δ > 0")
        if self.mechanism == "gaussian" and self.delta == 0:
            raise ValueError("the gaussian mechanism needs delta > 0 (e.g. 1e-7)")
        return self


class SecretStreamRelease:
    """Releases DP aggregates of a site's secret worker audio, charging a device-local ledger.

    Args:
        source: the secret contract of the raw stream (``worker_audio``).
        target: the derived contract of the release (``worker_audio_dp``), derived from ``source``.
        ledger: the device's budget ledger (usually on :class:`~refinement.ledger.SqliteLedgerStore`).
        site: this device's id; the ``site`` of every input record and the ledger key.
        config: windows, bounds and ε per release.

    Raises:
        RefinementError: ``source`` is not secret, ``target`` is not its derived
            DP contract, or the streams are not the ones this release knows.
    """

    def __init__(self, source: DataContract, target: DataContract, ledger: BudgetLedger, site: str,
                 config: EdgeReleaseConfig | None = None) -> None:
        if source.data_class is not DataClass.SECRET:
            raise RefinementError(
                f"contract '{source.id}' is {source.data_class}, not secret: the edge release is for secret streams "
                "only; send non-secret records with the edge producer directly")
        if source.stream != SOURCE_STREAM:
            raise RefinementError(f"contract '{source.id}' governs stream '{source.stream}'; this release knows "
                                  f"only '{SOURCE_STREAM}'")
        if target.data_class is not DataClass.DERIVED or target.stream != TARGET_STREAM:
            raise RefinementError(f"contract '{target.id}' must be a derived '{TARGET_STREAM}' contract, "
                                  f"not {target.data_class} '{target.stream}'")
        if source.id not in target.derived_from:
            raise RefinementError(f"contract '{target.id}' does not name '{source.id}' in derived_from: "
                                  "its lineage would not show where the aggregates come from; add it")
        if target.tenant != source.tenant:
            raise RefinementError(f"contract '{target.id}' belongs to tenant '{target.tenant}', its source "
                                  f"'{source.id}' to '{source.tenant}'; a derivative stays with its tenant")
        if not site:
            raise RefinementError("site must be this device's id")
        self.source = source
        self.target = target
        self.site = site
        self.config = config or EdgeReleaseConfig()
        cfg = self.config
        self._ledger = ledger
        self._queries: dict[str, DpQuery] = {
            "worker_count": DpQuery("count", cfg.count_epsilon, 1, None, cfg.mechanism, cfg.delta, "worker_id"),
            "mean_db_level": DpQuery("mean", cfg.mean_epsilon, cfg.readings_per_worker, cfg.db_bounds,
                                     cfg.mechanism, cfg.delta, "worker_id"),
        }

    def release(self, records: Iterable[Mapping[str, Any]], *, now_ms: int | None = None) -> list[dict[str, Any]]:
        """DP aggregates of every (closed) window in ``records``, charged to the ledger.

        Args:
            records: raw ``worker_audio`` records of this site; they are read, never kept.
            now_ms: the current time (epoch ms); windows not yet ended by then are left
                out (pass their records again later). None releases every window present.

        Returns:
            ``worker_audio_dp`` records, by window then metric. A window released before
            comes back with the value recorded then, and costs nothing.

        Raises:
            BudgetExceededError: the batch needs more than the ledger has left in a
                period; nothing of the batch was released or recorded.
            RefinementError: a record is malformed or belongs to another site.
        """
        windows = self._windows(records, now_ms)
        plan = [(start, metric) for start in sorted(windows) for metric in self._queries]
        self._check_budget(plan)
        out: list[dict[str, Any]] = []
        for start, metric in plan:
            record = self._release_one(start, metric, windows[start])
            if record is not None:
                out.append(record)
        return out

    # -- steps ------------------------------------------------------------------------
    def _windows(self, records: Iterable[Mapping[str, Any]], now_ms: int | None) -> dict[int, list[tuple[str, float]]]:
        """``(worker, db_level)`` rows per window start, each worker's rows in time order."""
        width = self.config.window_s * 1000
        raw: dict[int, list[tuple[int, str, float]]] = defaultdict(list)
        foreign = held = 0
        for index, record in enumerate(records):
            try:
                site, worker, ts, level = record["site"], record["worker_id"], record["ts"], record["db_level"]
            except KeyError as e:
                raise RefinementError(f"{SOURCE_STREAM} record #{index} has no field {e}; it does not match "
                                      f"{SOURCE_STREAM}.v1") from None
            if isinstance(ts, datetime) and ts.tzinfo is not None:  # as fastavro decodes timestamp-millis
                ts = int(ts.timestamp() * 1000)
            if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0 or not isinstance(level, (int, float)) \
                    or isinstance(level, bool) or not isinstance(worker, str):
                raise RefinementError(f"{SOURCE_STREAM} record #{index}: ts must be epoch milliseconds (or an aware "
                                      "datetime), worker_id a "
                                      "string and db_level a number")
            if site != self.site:
                foreign += 1
                continue
            start = ts - ts % width
            if now_ms is not None and start + width > now_ms:
                held += 1
                continue
            raw[start].append((ts, worker, float(level)))
        if foreign:
            raise RefinementError(f"{foreign} {SOURCE_STREAM} records are not from site '{self.site}'; nothing was "
                                  "released: give each site's records to that site's own release")
        if held:
            logger.debug("edge release: %d records of windows still open are held back", held)
        # Sorting by time (stable) makes contribution bounding keep the same readings
        # whatever order the device buffered them in.
        return {start: [(w, v) for _, w, v in sorted(rows, key=lambda r: r[0])] for start, rows in raw.items()}

    def _release_id(self, start: int, metric: str) -> str:
        return f"{self.target.id}/{self.site}/{start}/{self.config.window_s}/{metric}"

    def _check_budget(self, plan: list[tuple[int, str]]) -> None:
        """Refuse the batch up front if it cannot be charged whole, so no window is half released."""
        needed: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        known: dict[str, set[str]] = {}
        for start, metric in plan:
            period = month_of(start, self.config.period_tz)
            if period not in known:
                known[period] = {e.release_id for e in self._ledger.entries(self.site, period)}
            if self._release_id(start, metric) not in known[period]:
                cal = self._queries[metric].calibration
                needed[period][0] += cal.epsilon
                needed[period][1] += cal.delta
        for period, (eps, delta) in sorted(needed.items()):
            left = self._ledger.remaining(self.site, period)
            if eps > left.epsilon or delta > left.delta:
                budget = self._ledger.budget_for(self.site)
                raise BudgetExceededError(
                    f"privacy budget of '{self.site}' for {period} is too small for this batch: it needs ε={eps:g} "
                    f"δ={delta:g}, remaining ε={left.epsilon:g} δ={left.delta:g} of ε={budget.epsilon:g} "
                    f"δ={budget.delta:g}; nothing was released or recorded. Release fewer windows (longer window_s), "
                    "lower mean_epsilon/count_epsilon, or wait for the next period")

    def _release_one(self, start: int, metric: str, rows: list[tuple[str, float]]) -> dict[str, Any] | None:
        query = self._queries[metric]
        released = query.release(rows)
        if released.rows_dropped or released.rows_clamped or released.rows_invalid:
            # exact counts: for the site's operator, never sent
            logger.debug("edge release %s @%d: %d readings over the bound, %d clamped, %d non-finite",
                         metric, start, released.rows_dropped, released.rows_clamped, released.rows_invalid)
        entry = self._ledger.spend(self.site, month_of(start, self.config.period_tz), released.epsilon,
                                   released.delta, self._release_id(start, metric),
                                   f"{self.target.id} {metric}", result=json.dumps({"value": released.value}))
        if entry.result is None:
            # Recorded by someone who kept no value: a fresh draw would be a second,
            # unaccounted release of the same window.
            logger.warning("edge release %s: window %d was charged without its value; not released again",
                           metric, start)
            return None
        return {
            "site": self.site,
            "window_start": start,
            "window_s": self.config.window_s,
            "metric": metric,
            "value": float(json.loads(entry.result)["value"]),
            "epsilon": entry.epsilon,
            "delta": entry.delta,
            "contribution_bound": query.contribution_bound,
        }
