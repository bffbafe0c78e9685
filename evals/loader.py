"""Fill an isolated database with a simulator scenario through a real in-process OTLP receiver.

The simulator never writes to the store: it exports with the OpenTelemetry SDK to an
`IngestService` bound to ephemeral ports, exactly as it would to a running `serve`. Evals and the
test fixtures both load data this way.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ingest.service import IngestThread
from otel_ai.context import ServerContext
from otel_ai.settings import Settings
from sim.runner import SimResult, run_simulation
from store import Store

# Called with the receiver's gRPC endpoint and a time inside the scenario's last minute, after the scenario
# is sent: extra telemetry (evals plant prompt-injection text this way, through the same OTLP path), stamped
# with that time so it lies among the scenario's data however long ago the data ends.
Planter = Callable[[str, datetime], None]
PLANT_BEFORE_END = timedelta(seconds=30)


def load_scenario_into(
    store: Store,
    scenario: str,
    seed: int = 1,
    history: timedelta = timedelta(minutes=40),
    *,
    rate: float | None = None,
    fault_duration: timedelta | None = None,
    plant: Planter | None = None,
    anchor: datetime | None = None,
) -> tuple[SimResult, dict]:
    """Send `history` of `scenario` (fault over its last 10 minutes) into `store`'s database.

    `anchor` pins the end of history (default: now, minute-rounded). Returns the simulator's result
    (ground truth, counts acknowledged) and the receiver's stats.
    Raises RuntimeError when the receiver did not acknowledge everything the simulator sent.
    """
    settings = Settings(
        clickhouse_url=f"chdb://{store.url.path}" if store.is_embedded else "http://unused",
        database=store.database,
        host="127.0.0.1",
        otlp_grpc_port=0,
        otlp_http_port=0,
    )
    extra = {"rate": rate} if rate is not None else {}
    with IngestThread(ServerContext(settings=settings, store=store)) as ingest:
        result = run_simulation(
            scenario,
            endpoint=ingest.grpc_endpoint,
            protocol="grpc",
            history=history,
            live=timedelta(0),
            seed=seed,
            anchor=anchor or datetime.now(UTC).replace(second=0, microsecond=0),
            fault_duration=fault_duration,
            **extra,  # type: ignore[arg-type]
        )
        if plant is not None:
            plant(ingest.grpc_endpoint, result.end - PLANT_BEFORE_END)
    stats = ingest.service.stats()
    if any(result.failed.values()):
        raise RuntimeError(f"simulator could not deliver everything: failed {result.failed}, receiver {stats}")
    return result, stats
