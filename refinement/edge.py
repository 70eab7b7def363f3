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

What is released is the stream's privacy policy, the same files and loader the cloud's
refinement uses: ``refinement/policies/worker-audio-acme-steel.toml`` has an ``[edge]``
section instead of output tables. Per tumbling window of ``window_s`` seconds it releases
each ``[[edge.release]]`` aggregate (for worker audio: ``worker_count``, each worker
counted once; ``mean_db_level``, each worker adding at most 10 readings clamped to
[30, 130] dB), and every field of the schema is declared ``keep`` (only the site) or
``drop``.

The privacy unit is the policy's ``privacy_unit`` (the worker). Every release is charged to the device-local ledger
under the site (every worker may appear in every window, so the site's total is what any
worker can lose per period) before it is returned; a batch that does not fit the
remaining budget is refused whole. Re-running a window returns the value recorded the
first time, without spending again. Output records carry only the fields of
``worker_audio_dp.v1``: no worker id, no MFCC, no raw reading.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fieldloop.classes import DataClass
from fieldloop.contracts import DataContract
from refinement.dp import DpQuery
from refinement.errors import BudgetExceededError, RefinementError
from refinement.ledger import BudgetLedger, month_of

if TYPE_CHECKING:
    from refinement.policy import EdgePolicy

logger = logging.getLogger(__name__)

TARGET_STREAM = "worker_audio_dp"
# The fields of worker_audio_dp.v1, and nothing else, leave the device.
OUTPUT_FIELDS = ("site", "window_start", "window_s", "metric", "value", "epsilon", "delta", "contribution_bound")


class SecretStreamRelease:
    """Releases DP aggregates of a site's secret worker audio, charging a device-local ledger.

    Args:
        source: the secret contract of the raw stream (``worker_audio``).
        target: the derived contract of the release (``worker_audio_dp``), derived from ``source``.
        ledger: the device's budget ledger (usually on :class:`~refinement.ledger.SqliteLedgerStore`).
        site: this device's id; the ``site`` of every input record and the ledger key.
        policy: the ``[edge]`` policy; default: the packaged policy of ``source``.

    Raises:
        RefinementError: ``source`` is not secret, ``target`` is not its derived
            DP contract, or the policy does not release under ``target``.
    """

    def __init__(
        self,
        source: DataContract,
        target: DataContract,
        ledger: BudgetLedger,
        site: str,
        policy: EdgePolicy | None = None,
    ) -> None:
        if source.data_class is not DataClass.SECRET:
            raise RefinementError(
                f"contract '{source.id}' is {source.data_class}, not secret: the edge release is for secret streams "
                "only; send non-secret records with the edge producer directly"
            )
        if target.data_class is not DataClass.DERIVED or target.stream != TARGET_STREAM:
            raise RefinementError(
                f"contract '{target.id}' must be a derived '{TARGET_STREAM}' contract, "
                f"not {target.data_class} '{target.stream}'"
            )
        if source.id not in target.derived_from:
            raise RefinementError(
                f"contract '{target.id}' does not name '{source.id}' in derived_from: "
                "its lineage would not show where the aggregates come from; add it"
            )
        if target.tenant != source.tenant:
            raise RefinementError(
                f"contract '{target.id}' belongs to tenant '{target.tenant}', its source "
                f"'{source.id}' to '{source.tenant}'; a derivative stays with its tenant"
            )
        if not site:
            raise RefinementError("site must be this device's id")
        if policy is None:
            from refinement.policy import default_policies

            found = default_policies().get(source.id)
            policy = found.edge if found else None
            if policy is None:
                raise RefinementError(
                    f"contract '{source.id}' has no [edge] policy in refinement/policies; "
                    "add one: nothing of a secret stream is released without it"
                )
        if policy.release_contract != target.id:
            raise RefinementError(
                f"the edge policy of '{source.id}' releases under '{policy.release_contract}', not '{target.id}'"
            )
        self.source = source
        self.target = target
        self.site = site
        self.policy = policy
        self._ledger = ledger
        self._queries: dict[str, DpQuery] = {
            a.metric: DpQuery(
                a.query, a.epsilon, a.per_unit, a.bounds, policy.mechanism, policy.delta, policy.privacy_unit
            )
            for a in policy.release
        }
        self._fields = {a.metric: a.field for a in policy.release}

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
    def _windows(
        self, records: Iterable[Mapping[str, Any]], now_ms: int | None
    ) -> dict[int, list[tuple[str, dict[str, float]]]]:
        """``(unit, {field: value})`` rows per window start, in time order."""
        width = self.policy.window_s * 1000
        unit_field = self.policy.privacy_unit
        numeric = sorted({f for f in self._fields.values() if f})
        raw: dict[int, list[tuple[int, str, dict[str, float]]]] = defaultdict(list)
        foreign = held = 0
        for index, record in enumerate(records):
            try:
                site, unit, ts = record["site"], record[unit_field], record["ts"]
                values = {f: record[f] for f in numeric}
            except KeyError as e:
                raise RefinementError(
                    f"{self.source.stream} record #{index} has no field {e}; it does not match "
                    f"{self.source.stream}.v{self.source.schema_version}"
                ) from None
            if isinstance(ts, datetime) and ts.tzinfo is not None:  # as fastavro decodes timestamp-millis
                ts = int(ts.timestamp() * 1000)
            if (
                not isinstance(ts, int)
                or isinstance(ts, bool)
                or ts < 0
                or not isinstance(unit, str)
                or any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values.values())
            ):
                raise RefinementError(
                    f"{self.source.stream} record #{index}: ts must be epoch milliseconds (or an "
                    f"aware datetime), {unit_field} a string and {', '.join(numeric)} numbers"
                )
            if site != self.site:
                foreign += 1
                continue
            start = ts - ts % width
            if now_ms is not None and start + width > now_ms:
                held += 1
                continue
            raw[start].append((ts, unit, {f: float(v) for f, v in values.items()}))
        if foreign:
            raise RefinementError(
                f"{foreign} {self.source.stream} records are not from site '{self.site}'; nothing "
                "was released: give each site's records to that site's own release"
            )
        if held:
            logger.debug("edge release: %d records of windows still open are held back", held)
        # Sorting by time (stable) makes contribution bounding keep the same readings
        # whatever order the device buffered them in.
        return {start: [(u, v) for _, u, v in sorted(rows, key=lambda r: r[0])] for start, rows in raw.items()}

    def _release_id(self, start: int, metric: str) -> str:
        return f"{self.target.id}/{self.site}/{start}/{self.policy.window_s}/{metric}"

    def _check_budget(self, plan: list[tuple[int, str]]) -> None:
        """Refuse the batch up front if it cannot be charged whole, so no window is half released."""
        needed: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        known: dict[str, set[str]] = {}
        for start, metric in plan:
            period = month_of(start, self.policy.period_tz)
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
                    "lower the aggregates' epsilon in the edge policy, or wait for the next period"
                )

    def _release_one(self, start: int, metric: str, rows: list[tuple[str, dict[str, float]]]) -> dict[str, Any] | None:
        query, field = self._queries[metric], self._fields[metric]
        released = query.release((unit, values[field] if field else 1.0) for unit, values in rows)
        if released.rows_dropped or released.rows_clamped or released.rows_invalid:
            # exact counts: for the site's operator, never sent
            logger.debug(
                "edge release %s @%d: %d readings over the bound, %d clamped, %d non-finite",
                metric,
                start,
                released.rows_dropped,
                released.rows_clamped,
                released.rows_invalid,
            )
        entry = self._ledger.spend(
            self.site,
            month_of(start, self.policy.period_tz),
            released.epsilon,
            released.delta,
            self._release_id(start, metric),
            f"{self.target.id} {metric}",
            result=json.dumps({"value": released.value}),
        )
        if entry.result is None:
            # Recorded by someone who kept no value: a fresh draw would be a second,
            # unaccounted release of the same window.
            logger.warning(
                "edge release %s: window %d was charged without its value; not released again", metric, start
            )
            return None
        return {
            "site": self.site,
            "window_start": start,
            "window_s": self.policy.window_s,
            "metric": metric,
            "value": float(json.loads(entry.result)["value"]),
            "epsilon": entry.epsilon,
            "delta": entry.delta,
            "contribution_bound": query.contribution_bound,
        }
