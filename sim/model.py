"""The Astronomy Shop as data: services, pods and nodes, products, and user flows.

Shaped after the OpenTelemetry Demo so that telemetry looks like the real thing: the same
service names, gRPC methods, HTTP routes, resource attributes and load-generator flow weights.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

NAMESPACE = "astronomy-shop"
ENVIRONMENT = "production"
NODES = ("shop-node-a", "shop-node-b", "shop-node-c")


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the shop: how it is deployed and what its pods cost when idle."""

    name: str
    language: str
    version: str
    replicas: tuple[str, ...]  # node of each replica
    protocol: str  # "grpc", "http" or "kafka" (how it is called)
    grpc_service: str | None = None  # e.g. "oteldemo.CartService"
    memory_mb: float = 80.0
    cpu_idle: float = 0.03  # share of the pod's CPU limit used with no traffic
    cpu_per_busy_second: float = 0.6  # CPU share per second of request work per second


SERVICES: dict[str, ServiceSpec] = {
    s.name: s
    for s in (
        ServiceSpec("frontend-proxy", "cpp", "1.30.2", ("shop-node-a",), "http", memory_mb=60, cpu_idle=0.02),
        ServiceSpec("frontend", "nodejs", "2.1.3", ("shop-node-a", "shop-node-b"), "http", memory_mb=180),
        ServiceSpec("ad", "java", "2.1.3", ("shop-node-a",), "grpc", "oteldemo.AdService", memory_mb=310),
        ServiceSpec("cart", "dotnet", "2.1.3", ("shop-node-a",), "grpc", "oteldemo.CartService", memory_mb=140),
        ServiceSpec("checkout", "go", "2.1.3", ("shop-node-b", "shop-node-c"), "grpc",
                    "oteldemo.CheckoutService", memory_mb=45),
        ServiceSpec("currency", "cpp", "2.1.3", ("shop-node-c",), "grpc", "oteldemo.CurrencyService", memory_mb=25),
        ServiceSpec("email", "ruby", "2.1.3", ("shop-node-a",), "http", memory_mb=95),
        ServiceSpec("payment", "nodejs", "2.1.3", ("shop-node-b",), "grpc", "oteldemo.PaymentService",
                    memory_mb=120),
        ServiceSpec("product-catalog", "go", "2.1.3", ("shop-node-b",), "grpc",
                    "oteldemo.ProductCatalogService", memory_mb=40),
        ServiceSpec("quote", "php", "2.1.3", ("shop-node-c",), "http", memory_mb=35),
        ServiceSpec("recommendation", "python", "2.1.3", ("shop-node-b",), "grpc",
                    "oteldemo.RecommendationService", memory_mb=90),
        ServiceSpec("shipping", "rust", "2.1.3", ("shop-node-c",), "grpc", "oteldemo.ShippingService",
                    memory_mb=20),
        ServiceSpec("accounting", "dotnet", "2.1.3", ("shop-node-c",), "kafka", memory_mb=130),
        ServiceSpec("fraud-detection", "kotlin", "2.1.3", ("shop-node-c",), "kafka", memory_mb=280),
    )
}

# The call graph (who calls whom), as in the demo; the flows below follow it.
CALL_GRAPH: dict[str, tuple[str, ...]] = {
    "frontend-proxy": ("frontend",),
    "frontend": ("ad", "recommendation", "product-catalog", "cart", "checkout", "currency"),
    "checkout": ("cart", "payment", "shipping", "email", "product-catalog", "currency", "kafka"),
    "recommendation": ("product-catalog",),
    "shipping": ("quote",),
    "kafka": ("accounting", "fraud-detection"),
}


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    price_usd: float


PRODUCTS: tuple[Product, ...] = (
    Product("OLJCESPC7Z", "National Park Foundation Explorascope", 101.96),
    Product("66VCHSJNUP", "Starsense Explorer Refractor Telescope", 349.95),
    Product("1YMWWN1N4O", "Eclipsmart Travel Refractor Telescope", 129.95),
    Product("L9ECAV7KIM", "Lens Cleaning Kit", 21.95),
    Product("2ZYFJ3GM2N", "Roof Binoculars", 209.95),
    Product("0PUK6V6EV0", "Solar System Color Imager", 175.00),
    Product("LS4PSXUNUM", "Red Flashlight", 57.80),
    Product("9SIQT8TOJO", "Optical Tube Assembly", 3599.00),
    Product("6E92ZMYYFZ", "Solar Filter", 62.95),
    Product("HQTGWGPNH4", "The Comet Book", 0.99),
)

CURRENCIES = ("USD", "EUR", "CAD", "JPY", "GBP", "TRY")
COUNTRIES = ("United States", "United States", "United States", "Canada", "Germany", "Japan", "United Kingdom")
LOYALTY_LEVELS = ("platinum", "gold", "silver", "bronze")
CARD_TYPES = ("visa", "mastercard", "amex")

# (flow name, weight) like the demo's locustfile tasks.
FLOWS: tuple[tuple[str, int], ...] = (
    ("index", 1),
    ("browse_product", 10),
    ("get_recommendations", 3),
    ("get_ads", 3),
    ("view_cart", 3),
    ("add_to_cart", 2),
    ("checkout", 1),
    ("checkout_multi", 1),
)


@dataclass
class Instance:
    """One pod of a service; its resource attributes are what every signal it emits carries."""

    service: str
    version: str
    instance_id: str
    pod: str
    node: str
    language: str

    def resource_attributes(self) -> dict[str, str]:
        return {
            "service.name": self.service,
            "service.namespace": "opentelemetry-demo",
            "service.version": self.version,
            "service.instance.id": self.instance_id,
            "k8s.pod.name": self.pod,
            "k8s.namespace.name": NAMESPACE,
            "k8s.node.name": self.node,
            "k8s.deployment.name": self.service,
            "host.name": self.node,
            "deployment.environment.name": ENVIRONMENT,
            "telemetry.sdk.language": self.language,
            "telemetry.sdk.name": "opentelemetry",
        }


@dataclass
class Deployment:
    """All pods, made deterministically from a seed; `replace` rolls out a new version."""

    seed: int
    instances: dict[str, list[Instance]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"deployment-{self.seed}")
        for spec in SERVICES.values():
            self.instances[spec.name] = self._make(spec, spec.version)

    def _make(self, spec: ServiceSpec, version: str) -> list[Instance]:
        rs = "".join(self._rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(10))
        pods = []
        for node in spec.replicas:
            suffix = "".join(self._rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            pods.append(Instance(
                service=spec.name, version=version, instance_id=str(uuid.UUID(int=self._rng.getrandbits(128))),
                pod=f"{spec.name}-{rs}-{suffix}", node=node, language=spec.language,
            ))
        return pods

    def new_version(self, service: str, version: str) -> list[Instance]:
        """New pods of `service` running `version` (a rollout), on the same nodes."""
        return self._make(SERVICES[service], version)

    def all(self) -> list[Instance]:
        return [i for pods in self.instances.values() for i in pods]


def services_on_node(node: str) -> list[str]:
    return sorted(s.name for s in SERVICES.values() if node in s.replicas)
