"""The edge release of secret worker audio: only DP aggregates come out, within their bounds and budget."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from fastavro.validation import validate as avro_validate

from fieldloop.contracts import DataContract, load_contracts
from fieldloop.wire import decode, default_registry, encode
from refinement.edge import OUTPUT_FIELDS, SecretStreamRelease
from refinement.errors import BudgetExceededError, RefinementError
from refinement.ledger import Budget, BudgetLedger, SqliteLedgerStore, month_of
from refinement.policy import EdgePolicy, default_policies

SITE = "site-01"
T0 = 1_775_000_100_000  # 2026-04-01 08:35 JST, the start of a 300 s window
WINDOW_MS = 300_000
HUGE = 1e6  # ε at which the noise is below 10^-3: the exact aggregate shows through


@pytest.fixture(scope="module")
def contracts() -> dict[str, DataContract]:
    return load_contracts()


@pytest.fixture
def ledger(tmp_path: Path) -> BudgetLedger:
    return BudgetLedger(SqliteLedgerStore(tmp_path / "dp_ledger.db"), Budget(epsilon=1e9))


def edge_policy(
    mean_epsilon: float | None = None,
    count_epsilon: float | None = None,
    readings_per_worker: int | None = None,
    db_bounds: tuple[float, float] | None = None,
    **edge: Any,
) -> EdgePolicy:
    """The packaged edge policy of worker audio, with some of its numbers changed."""
    base = default_policies()["worker-audio-acme-steel"].edge.model_dump()
    for agg in base["release"]:
        if agg["metric"] == "worker_count" and count_epsilon is not None:
            agg["epsilon"] = count_epsilon
        if agg["metric"] == "mean_db_level":
            agg["epsilon"] = mean_epsilon if mean_epsilon is not None else agg["epsilon"]
            agg["per_unit"] = readings_per_worker or agg["per_unit"]
            agg["bounds"] = db_bounds or agg["bounds"]
    return EdgePolicy.model_validate({**base, **edge})


def release_for(contracts: dict[str, DataContract], ledger: BudgetLedger, **config: Any) -> SecretStreamRelease:
    return SecretStreamRelease(
        contracts["worker-audio-acme-steel"],
        contracts["worker-audio-dp-acme-steel"],
        ledger,
        SITE,
        edge_policy(**config),
    )


def audio(worker: str, ts: int, db: float, site: str = SITE) -> dict[str, Any]:
    return {"site": site, "worker_id": worker, "ts": ts, "db_level": db, "mfcc": [0.1 * i for i in range(13)]}


def shift(rng: random.Random, windows: int = 3, workers: int = 8) -> list[dict[str, Any]]:
    start = T0 - T0 % WINDOW_MS
    return [
        audio(f"worker-{w:03d}", start + k * WINDOW_MS + rng.randrange(WINDOW_MS), rng.uniform(55, 95))
        for k in range(windows)
        for w in range(workers)
        for _ in range(rng.randrange(1, 30))
    ]


# -- nothing raw leaves ----------------------------------------------------------------
def test_output_is_only_dp_aggregates_matching_the_derived_schema(contracts, ledger) -> None:
    records = shift(random.Random(1))
    out = release_for(contracts, ledger).release(records)

    schema = default_registry().get("worker_audio_dp")
    assert [f["name"] for f in schema.parsed["fields"]] == list(OUTPUT_FIELDS)
    assert len(out) == 3 * 2
    raw_strings = {r["worker_id"] for r in records}
    for record in out:
        assert tuple(record) == OUTPUT_FIELDS
        assert not raw_strings & {v for v in record.values() if isinstance(v, str)}
        assert avro_validate(record, schema.parsed, raise_errors=True, strict=True)
        assert decode(encode(record, schema), default_registry())["metric"] == record["metric"]
    assert {r["metric"] for r in out} == {"worker_count", "mean_db_level"}


def test_records_carry_their_privacy_parameters(contracts, ledger) -> None:
    out = release_for(
        contracts, ledger, mean_epsilon=0.4, count_epsilon=0.2, readings_per_worker=6, window_s=300
    ).release(shift(random.Random(2), windows=1))

    by_metric = {r["metric"]: r for r in out}
    assert by_metric["worker_count"]["contribution_bound"] == 1
    assert by_metric["mean_db_level"]["contribution_bound"] == 6
    assert 0 < by_metric["worker_count"]["epsilon"] <= 0.2
    assert 0 < by_metric["mean_db_level"]["epsilon"] <= 0.4
    assert all(r["delta"] == 0.0 and r["window_s"] == 300 and r["site"] == SITE for r in out)
    assert all(r["window_start"] % WINDOW_MS == 0 for r in out)


def test_the_edge_producer_accepts_the_release_and_refuses_the_raw_record(contracts, ledger, tmp_path) -> None:
    from ingestion import EdgeProducer, EdgeProducerConfig, RefusedError

    out = release_for(contracts, ledger).release(shift(random.Random(3), windows=1))
    config = EdgeProducerConfig(bootstrap_servers="127.0.0.1:9", spool_dir=tmp_path / "spool", compression="gzip")
    producer = EdgeProducer(config, contracts)
    producer.pause()  # no Kafka here: records stay in the spool
    try:
        seqs = [producer.send("worker-audio-dp-acme-steel", SITE, record) for record in out]
        with pytest.raises(RefusedError) as refused:
            producer.send("worker-audio-acme-steel", SITE, audio("worker-001", T0, 70.0))
    finally:
        producer.close(timeout_s=0)
    assert seqs == [1, 2]
    assert refused.value.reason == "raw-secret"


# -- contracts -------------------------------------------------------------------------
def test_non_secret_input_contract_is_refused(contracts, ledger) -> None:
    with pytest.raises(RefinementError, match="not secret"):
        SecretStreamRelease(
            contracts["plant-sensors-acme-steel"], contracts["worker-audio-dp-acme-steel"], ledger, SITE
        )


def test_target_must_be_the_derived_contract_of_the_source(contracts, ledger) -> None:
    with pytest.raises(RefinementError, match="derived"):
        SecretStreamRelease(contracts["worker-audio-acme-steel"], contracts["plant-sensors-acme-steel"], ledger, SITE)
    unrelated = contracts["worker-audio-dp-acme-steel"].model_copy(
        update={"derived_from": ("plant-sensors-acme-steel",)}
    )
    with pytest.raises(RefinementError, match="derived_from"):
        SecretStreamRelease(contracts["worker-audio-acme-steel"], unrelated, ledger, SITE)


def test_records_of_another_site_are_refused(contracts, ledger) -> None:
    records = [audio("worker-001", T0, 70.0), audio("worker-002", T0, 70.0, site="site-02")]

    with pytest.raises(RefinementError, match="not from site") as refused:
        release_for(contracts, ledger).release(records)
    assert "worker-00" not in str(refused.value)
    assert ledger.entries(SITE, month_of(T0)) == []


def test_malformed_record_is_refused_without_echoing_values(contracts, ledger) -> None:
    with pytest.raises(RefinementError, match="no field 'db_level'"):
        release_for(contracts, ledger).release([{"site": SITE, "worker_id": "worker-001", "ts": T0}])


# -- contribution bounds ---------------------------------------------------------------
def test_contribution_bounds_hold(contracts, ledger) -> None:
    start = T0 - T0 % WINDOW_MS
    loud = [audio("worker-loud", start + i, 500.0) for i in range(5000)]  # clamped to 130, at most 4 readings
    quiet = [audio(f"worker-{w}", start + 1000 * w + i, 60.0) for w in range(9) for i in range(3)]

    out = release_for(contracts, ledger, mean_epsilon=HUGE, count_epsilon=HUGE, readings_per_worker=4).release(
        loud + quiet
    )

    values = {r["metric"]: r["value"] for r in out}
    assert values["worker_count"] == 10  # workers, not readings
    assert values["mean_db_level"] == pytest.approx((4 * 130.0 + 27 * 60.0) / 31, abs=0.01)


def test_input_order_does_not_change_which_readings_count(contracts, tmp_path) -> None:
    start = T0 - T0 % WINDOW_MS
    records = [audio("worker-a", start + i * 10, float(40 + i)) for i in range(50)]
    shuffled = records[:]
    random.Random(4).shuffle(shuffled)

    def mean(rs: list[dict[str, Any]], name: str) -> float:
        ledger = BudgetLedger(SqliteLedgerStore(tmp_path / f"{name}.db"), Budget(1e9))
        out = release_for(contracts, ledger, mean_epsilon=HUGE, count_epsilon=HUGE, readings_per_worker=5).release(rs)
        return next(r["value"] for r in out if r["metric"] == "mean_db_level")

    assert mean(records, "sorted") == pytest.approx(mean(shuffled, "shuffled"), abs=0.01)


# -- budget ----------------------------------------------------------------------------
def test_every_release_is_charged_to_the_site(contracts, ledger) -> None:
    out = release_for(contracts, ledger, mean_epsilon=0.5, count_epsilon=0.25).release(shift(random.Random(5)))

    entries = ledger.entries(SITE, month_of(T0))
    assert len(entries) == len(out) == 6
    assert sum(e.epsilon for e in entries) == pytest.approx(3 * 0.75)
    assert all(e.release_id.startswith(f"worker-audio-dp-acme-steel/{SITE}/") for e in entries)


def test_rerunning_a_window_replays_the_recorded_value_without_spending(contracts, ledger) -> None:
    records = shift(random.Random(6))
    release = release_for(contracts, ledger)

    first = release.release(records)
    again = release.release(records)

    assert again == first
    assert len(ledger.entries(SITE, month_of(T0))) == 6


def test_over_budget_batch_is_refused_whole(contracts, tmp_path) -> None:
    ledger = BudgetLedger(SqliteLedgerStore(tmp_path / "dp_ledger.db"), Budget(epsilon=2.0))
    release = release_for(contracts, ledger, mean_epsilon=0.5, count_epsilon=0.25)
    release.release(shift(random.Random(7), windows=2))  # 1.5 of 2.0

    later = [audio("worker-001", T0 + 10 * WINDOW_MS + i, 70.0) for i in range(3)]
    later += [audio("worker-001", T0 + 11 * WINDOW_MS + i, 70.0) for i in range(3)]
    with pytest.raises(BudgetExceededError, match="nothing was released"):
        release.release(later)  # needs 1.5 more

    assert len(ledger.entries(SITE, month_of(T0))) == 4
    assert ledger.spent(SITE, month_of(T0)).epsilon == pytest.approx(1.5)


def test_open_windows_are_held_back(contracts, ledger) -> None:
    start = T0 - T0 % WINDOW_MS
    records = [audio("worker-001", start + 10, 70.0), audio("worker-001", start + WINDOW_MS + 10, 70.0)]

    out = release_for(contracts, ledger).release(records, now_ms=start + WINDOW_MS + 20)

    assert {r["window_start"] for r in out} == {start}


def test_gaussian_release_records_and_spends_delta(contracts, tmp_path) -> None:
    ledger = BudgetLedger(SqliteLedgerStore(tmp_path / "dp_ledger.db"), Budget(epsilon=10.0, delta=1e-6))

    out = release_for(contracts, ledger, mechanism="gaussian", delta=1e-7).release(shift(random.Random(8), windows=1))

    assert all(r["delta"] == 1e-7 and r["epsilon"] > 0 for r in out)
    assert ledger.spent(SITE, month_of(T0)).delta == pytest.approx(2e-7)


def test_gaussian_release_is_refused_by_a_pure_epsilon_budget(contracts, ledger) -> None:
    with pytest.raises(BudgetExceededError, match="δ"):
        release_for(contracts, ledger, mechanism="gaussian", delta=1e-7).release(shift(random.Random(9), windows=1))
    assert ledger.entries(SITE, month_of(T0)) == []


def test_laplace_with_delta_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="delta must be 0"):
        edge_policy(delta=1e-6)
