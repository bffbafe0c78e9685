"""Fault scenarios with machine-readable ground truth.

Each scenario is a set of effects (slow or failing operations, an unreachable service, CPU or
memory pressure, a rollout, a Kafka overload) applied during the fault window. Effects act only
on the root cause; what users notice elsewhere comes from the call graph by itself (a slow payment
makes checkout slow because checkout waits for payment).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from sim.model import services_on_node

Kind = Literal["latency", "errors", "saturation", "dependency"]
Attrs = dict[str, object]
Predicate = Callable[[Attrs], bool]


class GroundTruth(BaseModel):
    """What really happened in a run: the answer a good diagnosis names."""

    scenario: str
    root_cause_service: str | None = None
    root_cause_operation: str | None = None
    kind: Kind | None = None
    start: datetime | None = Field(None, description="fault start (UTC)")
    end: datetime | None = Field(None, description="fault end (UTC); None while still running")
    symptom: str = ""
    symptom_service: str | None = None
    description: str = ""
    feature_flag: str | None = Field(None, description="the OpenTelemetry Demo flag this mirrors")
    affected_services: list[str] = Field(default_factory=list, description="services whose telemetry changes")
    root_cause_node: str | None = None
    evidence_attributes: dict[str, str] = Field(
        default_factory=dict, description="span attributes that single out the faulty requests"
    )


# ---- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slow:
    """Extra work in `service` (`operation` = server span name, None = every operation)."""

    service: str
    operation: str | None = None
    factor: float = 1.0
    add_ms: tuple[float, float] = (0.0, 0.0)  # uniform extra delay
    ramp_per_min: float = 0.0  # factor grows by this much per minute of fault
    prob: float = 1.0
    when: Predicate | None = None
    node: str | None = None  # only pods on this node


@dataclass(frozen=True)
class Fail:
    """Requests to `operation` of `service` fail with `message`."""

    service: str
    operation: str | None
    prob: float
    message: str
    exception: str = "Error"
    grpc_code: int = 2  # UNKNOWN
    when: Predicate | None = None


@dataclass(frozen=True)
class Unreachable:
    """Nobody can connect to `service`: callers' client spans fail, the service sees nothing."""

    service: str
    connect_ms: float = 3.0


@dataclass(frozen=True)
class Timeout:
    """`operation` (a client call made by `service`) hangs until the caller's deadline."""

    service: str
    operation: str
    prob: float
    timeout_ms: float


@dataclass(frozen=True)
class Cpu:
    """CPU of `service`'s pods (or of every pod on `node`) is pinned near `level` of its limit."""

    level: float
    service: str | None = None
    node: str | None = None


@dataclass(frozen=True)
class Memory:
    """`service`'s memory grows by `mb_per_min` while the fault lasts."""

    service: str
    mb_per_min: float


@dataclass(frozen=True)
class GcPause:
    """Stop-the-world pauses in `service`: every `period_s`, requests wait up to `pause_s`."""

    service: str
    period_s: float
    pause_s: float


@dataclass(frozen=True)
class Rollout:
    """`service` runs `version` (new pods) during the fault; rolled back at its end."""

    service: str
    version: str


@dataclass(frozen=True)
class KafkaOverload:
    """The producer publishes `extra_messages` more per order; consumers fall behind."""

    producer: str
    extra_messages: int
    consumer_delay_ms: tuple[float, float]


Effect = Slow | Fail | Unreachable | Timeout | Cpu | Memory | GcPause | Rollout | KafkaOverload


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    effects: tuple[Effect, ...] = ()
    root_cause_service: str | None = None
    root_cause_operation: str | None = None
    kind: Kind | None = None
    symptom: str = ""
    symptom_service: str | None = None
    affected_services: tuple[str, ...] = ()
    feature_flag: str | None = None
    root_cause_node: str | None = None
    evidence_attributes: dict[str, str] = field(default_factory=dict)

    def truth(self, start: datetime | None, end: datetime | None) -> GroundTruth:
        faulty = bool(self.effects)
        return GroundTruth(
            scenario=self.name, root_cause_service=self.root_cause_service,
            root_cause_operation=self.root_cause_operation, kind=self.kind,
            start=start if faulty else None, end=end if faulty else None, symptom=self.symptom,
            symptom_service=self.symptom_service, description=self.description, feature_flag=self.feature_flag,
            affected_services=list(self.affected_services), root_cause_node=self.root_cause_node,
            evidence_attributes=dict(self.evidence_attributes),
        )


# ---- the catalogue ---------------------------------------------------------------------------

PAYMENT_CHARGE = "oteldemo.PaymentService/Charge"
CHECKOUT_PLACE_ORDER = "oteldemo.CheckoutService/PlaceOrder"
AD_GET_ADS = "oteldemo.AdService/GetAds"
PC_GET_PRODUCT = "oteldemo.ProductCatalogService/GetProduct"
PC_LIST_PRODUCTS = "oteldemo.ProductCatalogService/ListProducts"
REC_LIST = "oteldemo.RecommendationService/ListRecommendations"
SHIPPING_GET_QUOTE = "oteldemo.ShippingService/GetQuote"
CURRENCY_CONVERT = "oteldemo.CurrencyService/Convert"
CURRENCY_UPSTREAM = "GET /v1/latest"  # currency's client call to the exchange-rate provider
IMAGES_ROUTE = "GET /images/{file}"
ORDERS_PUBLISH = "orders publish"
FAULTY_PRODUCT = "OLJCESPC7Z"
NOISY_NODE = "shop-node-c"


def _on_node_except(node: str, noisy: str) -> tuple[Slow, ...]:
    return tuple(Slow(s, factor=4.0, add_ms=(5.0, 60.0), node=node) for s in services_on_node(node) if s != noisy)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("none", "No fault: steady traffic with background errors and long tails only."),
    Scenario(
        "paymentSlow", "The card processor behind payment is slow: Charge takes seconds.",
        (Slow("payment", PAYMENT_CHARGE, factor=1.0, add_ms=(900.0, 2600.0)),),
        "payment", PAYMENT_CHARGE, "latency", "checkout is slow", "frontend",
        ("payment", "checkout", "frontend", "frontend-proxy"),
    ),
    Scenario(
        "paymentFailure", "payment rejects charges of gold loyalty members: 'Invalid token'.",
        (Fail("payment", PAYMENT_CHARGE, 1.0, "Payment request failed. Invalid token. app.loyalty.level=gold",
              when=lambda a: a.get("app.loyalty.level") == "gold"),),
        "payment", PAYMENT_CHARGE, "errors", "checkout fails with errors", "frontend",
        ("payment", "checkout", "frontend", "frontend-proxy"), "paymentFailure",
        evidence_attributes={"app.loyalty.level": "gold"},
    ),
    Scenario(
        "paymentUnreachable", "payment cannot be reached (bad address): checkout's calls fail to connect.",
        (Unreachable("payment"),),
        "payment", PAYMENT_CHARGE, "dependency", "checkout fails with errors", "frontend",
        ("payment", "checkout", "frontend", "frontend-proxy"), "paymentUnreachable",
    ),
    Scenario(
        "cartFailure", "cart cannot reach its Valkey cache: cart operations fail.",
        (Fail("cart", None, 0.5, "Can't access cart storage. System.ApplicationException: "
              "Wasn't able to connect to redis", exception="System.ApplicationException", grpc_code=9),),
        "cart", None, "errors", "the cart page and add-to-cart return errors", "frontend",
        ("cart", "checkout", "frontend", "frontend-proxy"), "cartFailure",
    ),
    Scenario(
        "productCatalogFailure", f"GetProduct fails for product {FAULTY_PRODUCT}.",
        (Fail("product-catalog", PC_GET_PRODUCT, 1.0, "Error: Product Catalog Fail Feature Flag Enabled",
              grpc_code=13, when=lambda a: a.get("app.product.id") == FAULTY_PRODUCT),),
        "product-catalog", PC_GET_PRODUCT, "errors", "product pages fail for one product", "frontend",
        ("product-catalog", "frontend", "frontend-proxy", "checkout"), "productCatalogFailure",
        evidence_attributes={"app.product.id": FAULTY_PRODUCT},
    ),
    Scenario(
        "recommendationCacheFailure", "recommendation's cache leaks: memory climbs and every call gets slower.",
        (Slow("recommendation", REC_LIST, factor=2.0, ramp_per_min=3.0), Memory("recommendation", 40.0)),
        "recommendation", REC_LIST, "latency", "recommendations are slow", "frontend",
        ("recommendation", "frontend", "frontend-proxy"), "recommendationCacheFailure",
    ),
    Scenario(
        "adFailure", "ad fails one in five GetAds calls.",
        (Fail("ad", AD_GET_ADS, 0.2, "io.grpc.StatusRuntimeException: UNAVAILABLE", exception="StatusRuntimeException",
              grpc_code=14),),
        "ad", AD_GET_ADS, "errors", "ads fail to load", "frontend", ("ad", "frontend", "frontend-proxy"), "adFailure",
    ),
    Scenario(
        "adHighCpu", "ad burns CPU (a runaway loop): the pod is pinned and GetAds slows down.",
        (Cpu(0.97, service="ad"), Slow("ad", AD_GET_ADS, factor=6.0, add_ms=(20.0, 120.0))),
        "ad", AD_GET_ADS, "saturation", "ads are slow", "frontend", ("ad", "frontend", "frontend-proxy"), "adHighCpu",
    ),
    Scenario(
        "adManualGc", "ad triggers full garbage collections: stop-the-world pauses stall GetAds.",
        (GcPause("ad", period_s=12.0, pause_s=2.5),),
        "ad", AD_GET_ADS, "latency", "ads are slow", "frontend", ("ad", "frontend", "frontend-proxy"), "adManualGc",
    ),
    Scenario(
        "imageSlowLoad", "frontend-proxy delays image requests (fault injection).",
        (Slow("frontend-proxy", IMAGES_ROUTE, add_ms=(1500.0, 4000.0)),),
        "frontend-proxy", IMAGES_ROUTE, "latency", "product images load slowly", "frontend-proxy",
        ("frontend-proxy",), "imageSlowLoad",
    ),
    Scenario(
        "intlShippingSlowdown", "shipping quotes for addresses outside the US take seconds.",
        (Slow("shipping", SHIPPING_GET_QUOTE, add_ms=(1200.0, 3000.0),
              when=lambda a: a.get("app.shipping.address.country") != "United States"),),
        "shipping", SHIPPING_GET_QUOTE, "latency", "checkout is slow for international orders", "frontend",
        ("shipping", "checkout", "frontend", "frontend-proxy"), "intlShippingSlowdown",
        evidence_attributes={"app.shipping.international": "true"},
    ),
    Scenario(
        "kafkaQueueProblems", "checkout floods the orders topic and consumers slow down: lag builds up.",
        (KafkaOverload("checkout", extra_messages=10, consumer_delay_ms=(400.0, 1200.0)),),
        "checkout", ORDERS_PUBLISH, "saturation", "orders are processed late (Kafka consumer lag)",
        "fraud-detection", ("checkout", "accounting", "fraud-detection"), "kafkaQueueProblems",
    ),
    Scenario(
        "emailMemoryLeak", "email leaks memory: its memory climbs and sending gets slower.",
        (Memory("email", 45.0), Slow("email", "POST /send_order_confirmation", ramp_per_min=2.0)),
        "email", "POST /send_order_confirmation", "saturation", "order confirmation is slow", "checkout",
        ("email", "checkout"), "emailMemoryLeak",
    ),
    Scenario(
        "productCatalogSlowQuery", "a query in product-catalog lost its index: SELECTs on products are slow.",
        (Slow("product-catalog", "SELECT catalog.products", factor=40.0, add_ms=(60.0, 250.0)),),
        "product-catalog", PC_GET_PRODUCT, "latency", "product pages are slow", "frontend",
        ("product-catalog", "recommendation", "checkout", "frontend", "frontend-proxy"),
    ),
    Scenario(
        "currencyTimeout", "currency's exchange-rate provider times out: conversions hang until the deadline.",
        (Timeout("currency", CURRENCY_UPSTREAM, prob=0.6, timeout_ms=2000.0),),
        "currency", CURRENCY_CONVERT, "dependency", "checkout and product pages are slow and fail", "frontend",
        ("currency", "checkout", "frontend", "frontend-proxy"),
    ),
    Scenario(
        "checkoutBadDeploy", "checkout 2.2.0 rolls out with a regression: PlaceOrder is slower and fails more.",
        (Rollout("checkout", "2.2.0"), Slow("checkout", CHECKOUT_PLACE_ORDER, factor=8.0, add_ms=(150.0, 450.0)),
         Fail("checkout", CHECKOUT_PLACE_ORDER, 0.05, "failed to prepare order: context deadline exceeded",
              grpc_code=4)),
        "checkout", CHECKOUT_PLACE_ORDER, "latency", "checkout is slow", "frontend",
        ("checkout", "frontend", "frontend-proxy"), evidence_attributes={"service.version": "2.2.0"},
    ),
    Scenario(
        "nodeCpuSaturation", f"fraud-detection runs away on {NOISY_NODE} and starves its neighbours of CPU.",
        (Cpu(0.99, service="fraud-detection"), Cpu(0.97, node=NOISY_NODE),
         *_on_node_except(NOISY_NODE, "fraud-detection")),
        "fraud-detection", None, "saturation", "checkout is slow", "frontend",
        tuple(services_on_node(NOISY_NODE)) + ("frontend", "frontend-proxy"), root_cause_node=NOISY_NODE,
    ),
)}

DEFAULT_DEMO_SCENARIO = "paymentSlow"


def get_scenario(name: str) -> Scenario:
    """The scenario called `name`, or a ValueError listing the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
