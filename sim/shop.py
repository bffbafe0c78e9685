"""The shop's behaviour: user flows become span trees with logs, plus the numbers behind metrics.

Pure simulation, no OpenTelemetry SDK here: `Shop.advance(until)` returns finished traces as
`SimSpan` trees with explicit timestamps and ids; `sim.emit` turns them into real SDK telemetry.
Deterministic under a seed: arrivals come from one RNG and every request from its own RNG seeded
by (seed, request number), so a fault changes only the requests it touches.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import SpanKind

from sim.effects import ActiveEffects
from sim.model import (
    CARD_TYPES,
    COUNTRIES,
    CURRENCIES,
    FLOWS,
    LOYALTY_LEVELS,
    PRODUCTS,
    SERVICES,
    Deployment,
    Instance,
)
from sim.scenarios import (
    CURRENCY_UPSTREAM,
    IMAGES_ROUTE,
    ORDERS_PUBLISH,
    Scenario,
)

MS = 1_000_000
SEC = 1_000_000_000

# Background error rates (no fault): a steady trickle, as any real shop has.
BACKGROUND_ERRORS: dict[tuple[str, str], tuple[float, str]] = {
    ("payment", "oteldemo.PaymentService/Charge"): (0.004, "Credit card info is invalid."),
    ("ad", "oteldemo.AdService/GetAds"): (0.001, "io.grpc.StatusRuntimeException: CANCELLED"),
    ("cart", "oteldemo.CartService/AddItem"): (0.001, "Can't access cart storage. Timeout performing HSET"),
}

SEVERITY = {"DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17}
GRPC_CODES = {0: "OK", 2: "UNKNOWN", 4: "DEADLINE_EXCEEDED", 9: "FAILED_PRECONDITION", 13: "INTERNAL",
              14: "UNAVAILABLE"}


@dataclass
class SimLog:
    time: int
    severity: str
    body: str
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class SimSpan:
    inst: Instance
    name: str
    kind: SpanKind
    start: int
    trace_id: int
    span_id: int
    parent: SimSpan | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    end: int = 0
    error: str | None = None
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    links: list[tuple[int, int]] = field(default_factory=list)
    logs: list[SimLog] = field(default_factory=list)
    children: list[SimSpan] = field(default_factory=list)
    delayed: bool = False

    def walk(self) -> list[SimSpan]:
        out, stack = [], [self]
        while stack:
            sp = stack.pop()
            out.append(sp)
            stack.extend(reversed(sp.children))
        return out


@dataclass
class Hist:
    """A cumulative explicit-bucket histogram, as an SDK would keep it."""

    bounds: tuple[float, ...]
    start: int
    count: int = 0
    total: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    buckets: list[int] = field(default_factory=list)
    # the slowest recording since the last collection: (value, time, trace id, span id), an exemplar
    exemplar: tuple[float, int, int, int] | None = None

    def record(self, value: float, span: SimSpan | None = None) -> None:
        if span is not None and (self.exemplar is None or value > self.exemplar[0]):
            self.exemplar = (value, span.end, span.trace_id, span.span_id)
        if not self.buckets:
            self.buckets = [0] * (len(self.bounds) + 1)
        i = 0
        while i < len(self.bounds) and value > self.bounds[i]:
            i += 1
        self.buckets[i] += 1
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)


SECONDS_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
MS_BOUNDS = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0, 10000.0)


@dataclass
class InstanceMetrics:
    """What one pod accumulated: request histograms and counters (cumulative), busy time (per interval)."""

    hists: dict[tuple[str, tuple], Hist] = field(default_factory=dict)
    counters: dict[tuple[str, tuple], int] = field(default_factory=dict)
    busy_ns: int = 0


@dataclass
class User:
    session: str
    user_id: str
    currency: str
    country: str
    loyalty: str
    card: str


class Trace:
    """One request being generated: its RNG and trace id."""

    __slots__ = ("rng", "trace_id", "user")

    def __init__(self, rng: random.Random, user: User | None) -> None:
        self.rng = rng
        self.trace_id = rng.getrandbits(128) or 1
        self.user = user


class Shop:
    """The running shop: schedules user flows and Kafka consumers and generates their traces."""

    def __init__(self, seed: int, scenario: Scenario, start_ns: int, fault_start_ns: int | None,
                 fault_end_ns: int | None, rate: float = 4.0) -> None:
        self.seed = seed
        self.rate = rate
        self.now = start_ns
        self.start_ns = start_ns
        self.fx = ActiveEffects(scenario, fault_start_ns, fault_end_ns)
        self.deployment = Deployment(seed)
        self._rollouts: dict[str, list[Instance]] = {}
        self._arrivals = random.Random(f"arrivals-{seed}")
        self._next_arrival = start_ns
        self._seq = 0
        self._heap: list[tuple[int, int, Callable[[int, random.Random], SimSpan | None]]] = []
        self.metrics: dict[str, InstanceMetrics] = defaultdict(InstanceMetrics)
        self.consumer_free_at: dict[str, int] = defaultdict(int)
        self.queued: dict[str, int] = defaultdict(int)  # messages waiting per consumer group
        self._gauges = random.Random(f"gauges-{seed}")
        self._node_cpu: dict[str, float] = {}

    # ---- time and scheduling -----------------------------------------------------------------

    def load_factor(self, t: int) -> float:
        """Diurnal-ish load: busier in the afternoon (UTC), quieter at night."""
        hours = (t / 3600e9) % 24
        return 1.0 + 0.3 * math.sin(2 * math.pi * (hours - 9) / 24)

    def _push(self, t: int, job: Callable[[int, random.Random], SimSpan | None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, job))

    def advance(self, until: int) -> list[SimSpan]:
        """Generate everything that starts before `until`; returns root spans of finished traces."""
        while self._next_arrival < until:
            self._plan_flow(self._next_arrival)
            rate = self.rate * self.load_factor(self._next_arrival)
            self._next_arrival += int(self._arrivals.expovariate(rate) * SEC) + 1
        roots: list[SimSpan] = []
        while self._heap and self._heap[0][0] < until:
            t, seq, job = heapq.heappop(self._heap)
            root = job(t, random.Random(self.seed * 1_000_003 + seq))
            if root is not None:
                roots.append(root)
        self.now = until
        return roots

    def _plan_flow(self, t: int) -> None:
        rng = self._arrivals
        names, weights = zip(*FLOWS, strict=True)
        flow = rng.choices(names, weights)[0]
        user = User(
            session=f"{rng.getrandbits(64):016x}", user_id=f"{rng.getrandbits(32):08x}",
            currency=rng.choice(CURRENCIES), country=rng.choice(COUNTRIES),
            loyalty=rng.choice(LOYALTY_LEVELS), card=rng.choice(CARD_TYPES),
        )
        product = rng.choice(PRODUCTS).id
        steps: list[tuple[str, dict[str, Any]]] = []
        if flow == "index":
            steps = [("index", {}), ("image", {"file": "index-banner.jpg"})]
        elif flow == "browse_product":
            steps = [("product", {"product": product}), ("image", {"file": f"{product}.jpg"})]
        elif flow == "get_recommendations":
            steps = [("recommendations", {"product": product})]
        elif flow == "get_ads":
            steps = [("ads", {"category": rng.choice(("telescopes", "binoculars", "accessories", "books"))})]
        elif flow == "view_cart":
            steps = [("cart_view", {})]
        else:
            count = rng.randint(2, 4) if flow == "checkout_multi" else 1
            items = [(rng.choice(PRODUCTS).id, rng.choice((1, 2, 3, 4, 5, 10))) for _ in range(count)]
            for pid, qty in items:
                steps += [("product", {"product": pid}), ("cart_add", {"product": pid, "quantity": qty})]
            if flow != "add_to_cart":
                steps.append(("checkout", {"items": items}))
        at = t
        for kind, params in steps:
            self._push(at, lambda t0, r, k=kind, p=params: self._request(t0, r, user, k, p))
            at += int(rng.uniform(0.2, 2.5) * SEC) if kind != "image" else 0

    # ---- span helpers ------------------------------------------------------------------------

    def instances(self, service: str, t: int) -> list[Instance]:
        rollout = self.fx.rollout(t, service)
        if rollout:
            if service not in self._rollouts:
                self._rollouts[service] = self.deployment.new_version(service, rollout.version)
            return self._rollouts[service]
        return self.deployment.instances[service]

    def pick(self, tr: Trace, service: str, t: int) -> Instance:
        pods = self.instances(service, t)
        return pods[0] if len(pods) == 1 else tr.rng.choice(pods)

    def span(self, tr: Trace, inst: Instance, name: str, kind: SpanKind, start: int,
             parent: SimSpan | None, attrs: dict[str, Any] | None = None) -> SimSpan:
        sp = SimSpan(inst, name, kind, start, tr.trace_id, tr.rng.getrandbits(64) or 1, parent, attrs or {})
        if parent is not None:
            parent.children.append(sp)
        return sp

    def work(self, tr: Trace, sp: SimSpan, t: int, median_ms: float, sigma: float = 0.45,
             op: str | None = None) -> int:
        """Time spent by `sp`'s service on its own work from `t`, with long tails and fault effects."""
        rng = tr.rng
        d = median_ms * rng.lognormvariate(0.0, sigma)
        if rng.random() < 0.015:
            d *= rng.uniform(2.0, 8.0)
        factor, add_ms = self.fx.slow(rng, t, sp.inst.service, op or sp.name, sp.attrs, sp.inst.node)
        if sp.delayed:  # a fixed delay (fault injection, GC pause) hits a span once
            add_ms = 0.0
        elif add_ms:
            sp.delayed = True
        busy = int(d * factor * MS)
        if sp.kind != SpanKind.CLIENT:  # waiting on a database or an API is not CPU
            self.metrics[sp.inst.instance_id].busy_ns += busy
        return max(20_000, busy + int(add_ms * MS))

    def log(self, sp: SimSpan, t: int, severity: str, body: str, **attrs: Any) -> None:
        sp.logs.append(SimLog(t, severity, body, attrs))

    def fail(self, sp: SimSpan, t: int, message: str, exception: str = "Error", grpc_code: int | None = None,
             log: bool = True) -> None:
        """Mark `sp` failed with a recorded exception event and an error log carrying the stack."""
        sp.error = message
        if grpc_code is not None:
            sp.attrs["rpc.grpc.status_code"] = grpc_code
        stack = f"{exception}: {message}\n    at {sp.inst.service}.{sp.name.split('/')[-1]} ({sp.inst.service}:0)"
        sp.events.append(("exception", t, {"exception.type": exception, "exception.message": message,
                                           "exception.stacktrace": stack}))
        if log:
            self.log(sp, t, "ERROR", f"{sp.name} failed: {message}", **{
                "exception.type": exception, "exception.message": message, "exception.stacktrace": stack})

    def check_fail(self, tr: Trace, sp: SimSpan, t: int, fault: bool = True) -> bool:
        """Fail `sp` if the fault (when `fault`) or the background error rate says so."""
        service = sp.inst.service
        eff = self.fx.fail(tr.rng, t, service, sp.name, sp.attrs) if fault else None
        if eff is not None:
            self.fail(sp, t, eff.message, eff.exception, eff.grpc_code if sp.kind == SpanKind.SERVER else None)
            return True
        bg = BACKGROUND_ERRORS.get((service, sp.name))
        if bg and tr.rng.random() < bg[0]:
            self.fail(sp, t, bg[1], grpc_code=2)
            return True
        return False

    def record(self, sp: SimSpan) -> None:
        """Feed a finished server/consumer span into its pod's request metrics."""
        m = self.metrics[sp.inst.instance_id]
        dur = sp.end - sp.start
        status = "error" if sp.error else "ok"
        if sp.kind == SpanKind.CONSUMER:
            name, unit_value = "messaging.process.duration", dur / SEC
            key = (("messaging.destination.name", "orders"), ("messaging.system", "kafka"))
            bounds = SECONDS_BOUNDS
        elif "rpc.system" in sp.attrs:
            name, unit_value, bounds = "rpc.server.duration", dur / MS, MS_BOUNDS
            key = (("rpc.grpc.status_code", sp.attrs.get("rpc.grpc.status_code", 0)),
                   ("rpc.method", sp.attrs["rpc.method"]), ("rpc.service", sp.attrs["rpc.service"]),
                   ("rpc.system", "grpc"))
        else:
            name, unit_value, bounds = "http.server.request.duration", dur / SEC, SECONDS_BOUNDS
            key = (("http.request.method", sp.attrs.get("http.request.method", "GET")),
                   ("http.response.status_code", sp.attrs.get("http.response.status_code", 200)),
                   ("http.route", sp.attrs.get("http.route", "")))
        hist = m.hists.get((name, key))
        if hist is None:
            hist = m.hists[(name, key)] = Hist(bounds, self.start_ns)
        hist.record(unit_value, sp)
        ckey = ("app.requests", (("operation", sp.name), ("status", status)))
        m.counters[ckey] = m.counters.get(ckey, 0) + 1

    # ---- calls between services --------------------------------------------------------------

    def grpc(self, tr: Trace, parent: SimSpan, service: str, method: str, t: int,
             handler: Callable[[Trace, SimSpan], None], attrs: dict[str, Any] | None = None) -> SimSpan:
        """A gRPC call: client span in the caller, server span (filled by `handler`) in `service`."""
        rpc_service = SERVICES[service].grpc_service
        name = f"{rpc_service}/{method}"
        base = {"rpc.system": "grpc", "rpc.service": rpc_service, "rpc.method": method}
        client = self.span(tr, parent.inst, name, SpanKind.CLIENT, t, parent,
                           {**base, "server.address": service, "server.port": 8080})
        down = self.fx.unreachable(t, service)
        if down is not None:
            client.end = t + int(down.connect_ms * MS * tr.rng.uniform(0.8, 1.5))
            self.fail(client, client.end, f"14 UNAVAILABLE: connection refused ({service}:8080)",
                      "ConnectionError", log=False)
            client.attrs["rpc.grpc.status_code"] = 14
            return client
        net = int(tr.rng.uniform(0.15, 0.6) * MS)
        server = self.span(tr, self.pick(tr, service, t), name, SpanKind.SERVER, t + net, client,
                           {**base, **(attrs or {})})
        handler(tr, server)
        server.attrs.setdefault("rpc.grpc.status_code", 0)
        self.record(server)
        client.end = server.end + int(tr.rng.uniform(0.15, 0.6) * MS)
        client.attrs["rpc.grpc.status_code"] = server.attrs["rpc.grpc.status_code"]
        if server.error:
            code = server.attrs["rpc.grpc.status_code"]
            client.error = f"rpc error: code = {GRPC_CODES.get(code, code)} desc = {server.error}"
        return client

    def http(self, tr: Trace, parent: SimSpan, service: str, method: str, route: str, path: str, t: int,
             handler: Callable[[Trace, SimSpan], None], attrs: dict[str, Any] | None = None) -> SimSpan:
        """An HTTP call: client span in the caller, server span named `METHOD route` in `service`."""
        name = f"{method} {route}"
        client = self.span(tr, parent.inst, name, SpanKind.CLIENT, t, parent, {
            "http.request.method": method, "url.full": f"http://{service}:8080{path}",
            "server.address": service, "server.port": 8080})
        net = int(tr.rng.uniform(0.2, 0.8) * MS)
        server = self.span(tr, self.pick(tr, service, t), name, SpanKind.SERVER, t + net, client, {
            "http.request.method": method, "http.route": route, "url.path": path, "url.scheme": "http",
            "server.address": service, **(attrs or {})})
        handler(tr, server)
        code = server.attrs.setdefault("http.response.status_code", 500 if server.error else 200)
        self.record(server)
        client.end = server.end + int(tr.rng.uniform(0.2, 0.8) * MS)
        client.attrs["http.response.status_code"] = code
        if code >= 500:
            client.error = f"HTTP {code}"
        return client

    # ---- user requests through frontend-proxy and frontend -----------------------------------

    ROUTES = {
        "index": ("GET", "/", "/"),
        "product": ("GET", "/api/products/{productId}", "/api/products/{product}"),
        "recommendations": ("GET", "/api/recommendations", "/api/recommendations?productIds={product}"),
        "ads": ("GET", "/api/data", "/api/data?contextKeys={category}"),
        "cart_view": ("GET", "/api/cart", "/api/cart?sessionId={session}"),
        "cart_add": ("POST", "/api/cart", "/api/cart"),
        "checkout": ("POST", "/api/checkout", "/api/checkout"),
        "image": ("GET", IMAGES_ROUTE.split(" ", 1)[1], "/images/products/{file}"),
    }

    def _request(self, t: int, rng: random.Random, user: User, kind: str, params: dict[str, Any]) -> SimSpan:
        tr = Trace(rng, user)
        method, route, path_t = self.ROUTES[kind]
        path = path_t.format(session=user.session, **params) if "{" in path_t else path_t
        proxy = self.pick(tr, "frontend-proxy", t)
        root = self.span(tr, proxy, f"{method} {route}", SpanKind.SERVER, t, None, {
            "http.request.method": method, "http.route": route, "url.path": path, "url.scheme": "https",
            "server.address": "shop.example.com", "user_agent.original": "python-requests/2.32.3",
            "client.address": f"10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            "app.session.id": user.session})
        at = t + self.work(tr, root, t, 0.25, op=root.name)
        if kind == "image":
            egress = self.span(tr, proxy, "router image-provider egress", SpanKind.CLIENT, at, root, {
                "http.request.method": "GET", "url.full": f"http://image-provider:8081{path}",
                "server.address": "image-provider", "upstream_cluster": "image-provider"})
            egress.end = at + int(rng.lognormvariate(0, 0.4) * 2.5 * MS)
            egress.attrs["http.response.status_code"] = 200
            root.attrs["http.response.status_code"] = 200
            root.end = egress.end + int(rng.uniform(0.1, 0.4) * MS)
            self.record(root)
            return root
        egress = self.span(tr, proxy, "router frontend egress", SpanKind.CLIENT, at, root, {
            "http.request.method": method, "url.full": f"http://frontend:8080{path}",
            "server.address": "frontend", "upstream_cluster": "frontend"})
        net = int(rng.uniform(0.2, 0.6) * MS)
        fe = self.span(tr, self.pick(tr, "frontend", at), f"{method} {route}", SpanKind.SERVER, at + net, egress, {
            "http.request.method": method, "http.route": route, "url.path": path, "url.scheme": "http",
            "server.address": "frontend", "app.session.id": user.session, "app.user.id": user.user_id})
        getattr(self, f"_fe_{kind}")(tr, fe, params)
        code = 500 if fe.error else 200
        fe.attrs["http.response.status_code"] = code
        self.record(fe)
        egress.end = fe.end + int(rng.uniform(0.2, 0.6) * MS)
        egress.attrs["http.response.status_code"] = code
        root.attrs["http.response.status_code"] = code
        root.end = egress.end + int(rng.uniform(0.1, 0.4) * MS)
        if code >= 500:
            egress.error = root.error = f"HTTP {code}"
        self.record(root)
        return root

    def _fe_calls(self, tr: Trace, fe: SimSpan, calls: list[Callable[[int], SimSpan]]) -> None:
        """Frontend work around sequential downstream calls; the first failure becomes a 500."""
        t = fe.start + self.work(tr, fe, fe.start, 3.0)
        for call in calls:
            child = call(t)
            t = child.end + int(tr.rng.uniform(0.05, 0.3) * MS)
            if child.error:
                self.fail(fe, t, f"Error: {child.error}", "Error")
                fe.end = t + int(tr.rng.uniform(0.5, 2.0) * MS)
                return
        fe.end = t + self.work(tr, fe, t, 2.0)

    def _convert_if_needed(self, tr: Trace, fe: SimSpan, to: str) -> list[Callable[[int], SimSpan]]:
        if to == "USD":
            return []
        return [lambda t: self.grpc(tr, fe, "currency", "Convert", t, lambda tr2, sp: self._currency_convert(
            tr2, sp, "USD", to), {"app.currency.conversion.from": "USD", "app.currency.conversion.to": to})]

    def _fe_index(self, tr: Trace, fe: SimSpan, params: dict[str, Any]) -> None:
        self._fe_calls(tr, fe, [
            lambda t: self.grpc(tr, fe, "product-catalog", "ListProducts", t, self._pc_list),
            lambda t: self.grpc(tr, fe, "currency", "GetSupportedCurrencies", t, self._currency_supported),
        ])

    def _fe_product(self, tr: Trace, fe: SimSpan, params: dict[str, Any]) -> None:
        pid = params["product"]
        fe.attrs["app.product.id"] = pid
        self._fe_calls(tr, fe, [
            lambda t: self.grpc(tr, fe, "product-catalog", "GetProduct", t, self._pc_get, {"app.product.id": pid}),
            *self._convert_if_needed(tr, fe, tr.user.currency),
        ])

    def _fe_recommendations(self, tr: Trace, fe: SimSpan, params: dict[str, Any]) -> None:
        others = tr.rng.sample([p.id for p in PRODUCTS if p.id != params["product"]], tr.rng.randint(2, 4))
        self._fe_calls(tr, fe, [
            lambda t: self.grpc(tr, fe, "recommendation", "ListRecommendations", t, self._recommend,
                                {"app.product.id": params["product"]}),
            *[(lambda t, p=p: self.grpc(tr, fe, "product-catalog", "GetProduct", t, self._pc_get,
                                        {"app.product.id": p})) for p in others],
        ])

    def _fe_ads(self, tr: Trace, fe: SimSpan, params: dict[str, Any]) -> None:
        self._fe_calls(tr, fe, [lambda t: self.grpc(tr, fe, "ad", "GetAds", t, self._ads,
                                                    {"app.ads.contextKeys": params["category"]})])

    def _fe_cart_view(self, tr: Trace, fe: SimSpan, params: dict[str, Any]) -> None:
        uid = tr.user.user_id
        self._fe_calls(tr, fe, [
            lambda t: self.grpc(tr, fe, "cart", "GetCart", t, self._cart_get, {"app.user.id": uid}),
            *self._convert_if_needed(tr, fe, tr.user.currency),
        ])

    def _fe_cart_add(self, tr: Trace, fe: SimSpan, params: dict[str, Any]) -> None:
        attrs = {"app.user.id": tr.user.user_id, "app.product.id": params["product"],
                 "app.product.quantity": params["quantity"]}
        fe.attrs.update(attrs)
        self._fe_calls(tr, fe, [lambda t: self.grpc(tr, fe, "cart", "AddItem", t, self._cart_add, attrs)])

    def _fe_checkout(self, tr: Trace, fe: SimSpan, params: dict[str, Any]) -> None:
        u = tr.user
        attrs = {"app.user.id": u.user_id, "app.user.currency": u.currency}
        self._fe_calls(tr, fe, [lambda t: self.grpc(
            tr, fe, "checkout", "PlaceOrder", t, lambda tr2, sp: self._place_order(tr2, sp, params["items"]), attrs)])

    # ---- backend services --------------------------------------------------------------------

    def _db(self, tr: Trace, parent: SimSpan, t: int, system: str, name: str, statement: str,
            median_ms: float, address: str) -> SimSpan:
        db = self.span(tr, parent.inst, name, SpanKind.CLIENT, t, parent, {
            "db.system": system, "db.statement": statement, "db.name": "otel" if system == "postgresql" else "0",
            "db.operation.name": name.split(" ")[0], "server.address": address,
            "server.port": 5432 if system == "postgresql" else 6379})
        db.end = t + self.work(tr, db, t, median_ms, op=name)
        return db

    def _pc_get(self, tr: Trace, sp: SimSpan) -> None:
        pid = sp.attrs["app.product.id"]
        t = sp.start + self.work(tr, sp, sp.start, 0.4)
        db = self._db(tr, sp, t, "postgresql", "SELECT catalog.products",
                      "SELECT id, name, description, picture, price_currency_code, price_units, price_nanos, "
                      "categories FROM catalog.products WHERE id = $1", 0.8, "postgresql")
        t = db.end + self.work(tr, sp, db.end, 0.2)
        if self.check_fail(tr, sp, t):
            sp.end = t
            return
        name = next(p.name for p in PRODUCTS if p.id == pid)
        sp.attrs["app.product.name"] = name
        self.log(sp, t, "INFO", f"Product Found - ID: {pid}, Name: {name}", **{"app.product.id": pid})
        sp.end = t

    def _pc_list(self, tr: Trace, sp: SimSpan) -> None:
        t = sp.start + self.work(tr, sp, sp.start, 0.5)
        db = self._db(tr, sp, t, "postgresql", "SELECT catalog.products",
                      "SELECT id, name, description, picture, price_currency_code, price_units, price_nanos, "
                      "categories FROM catalog.products", 1.5, "postgresql")
        sp.attrs["app.products.count"] = len(PRODUCTS)
        sp.end = db.end + self.work(tr, sp, db.end, 0.4)
        self.check_fail(tr, sp, sp.end)

    def _currency_supported(self, tr: Trace, sp: SimSpan) -> None:
        sp.end = sp.start + self.work(tr, sp, sp.start, 0.15)
        sp.attrs["app.currency.count"] = len(CURRENCIES)

    def _currency_convert(self, tr: Trace, sp: SimSpan, frm: str, to: str) -> None:
        sp.attrs.update({"app.currency.conversion.from": frm, "app.currency.conversion.to": to})
        t = sp.start + self.work(tr, sp, sp.start, 0.2)
        timeout = self.fx.timeout(t, "currency", CURRENCY_UPSTREAM)
        refresh = tr.rng.random() < (timeout.prob if timeout else 0.01)
        if refresh:  # cache miss: ask the exchange-rate provider
            up = self.span(tr, sp.inst, CURRENCY_UPSTREAM, SpanKind.CLIENT, t, sp, {
                "http.request.method": "GET", "url.full": "https://rates.example.org/v1/latest?base=EUR",
                "server.address": "rates.example.org", "server.port": 443})
            if timeout:
                up.end = t + int(timeout.timeout_ms * MS)
                self.fail(up, up.end, "Timeout was reached: operation timed out after 2000 milliseconds",
                          "curl::TimeoutError", log=False)
                t = up.end
                self.fail(sp, t, "exchange rates unavailable: upstream timeout", "std::runtime_error", 4)
                sp.end = t + int(0.1 * MS)
                return
            up.end = t + self.work(tr, up, t, 45.0, op=CURRENCY_UPSTREAM)
            up.attrs["http.response.status_code"] = 200
            t = up.end
        sp.end = t + self.work(tr, sp, t, 0.1)
        self.log(sp, sp.end, "INFO", f"Conversion request successful: {frm} -> {to}")

    def _cart_ops(self, tr: Trace, sp: SimSpan, ops: list[str]) -> None:
        t = sp.start + self.work(tr, sp, sp.start, 0.6)
        eff = self.fx.fail(tr.rng, t, "cart", sp.name, sp.attrs)
        for i, op in enumerate(ops):
            db = self._db(tr, sp, t, "redis", op, f"{op} {tr.user.user_id if tr.user else 'cart'}", 0.35,
                          "valkey-cart")
            t = db.end
            if eff is not None and i == 0:
                self.fail(db, t, "It was not possible to connect to the redis server(s). ConnectTimeout",
                          "StackExchange.Redis.RedisConnectionException", log=False)
                self.fail(sp, t, eff.message, eff.exception, eff.grpc_code)
                sp.end = t + int(0.3 * MS)
                return
        sp.end = t + self.work(tr, sp, t, 0.3)
        self.check_fail(tr, sp, sp.end, fault=False)

    def _cart_get(self, tr: Trace, sp: SimSpan) -> None:
        self.log(sp, sp.start, "INFO", f"GetCartAsync called with userId={sp.attrs.get('app.user.id')}")
        self._cart_ops(tr, sp, ["HGET"])

    def _cart_add(self, tr: Trace, sp: SimSpan) -> None:
        a = sp.attrs
        self.log(sp, sp.start, "INFO", f"AddItemAsync called with userId={a.get('app.user.id')}, "
                 f"productId={a.get('app.product.id')}, quantity={a.get('app.product.quantity')}")
        self._cart_ops(tr, sp, ["HGET", "HSET", "EXPIRE"])

    def _cart_empty(self, tr: Trace, sp: SimSpan) -> None:
        self.log(sp, sp.start, "INFO", f"EmptyCartAsync called with userId={sp.attrs.get('app.user.id')}")
        self._cart_ops(tr, sp, ["HSET", "EXPIRE"])

    def _recommend(self, tr: Trace, sp: SimSpan) -> None:
        t = sp.start + self.work(tr, sp, sp.start, 1.2)
        inner = self.span(tr, sp.inst, "get_product_list", SpanKind.INTERNAL, t, sp)
        cache_broken = self.fx.leaked_mb(t, "recommendation") > 0
        hit = tr.rng.random() < 0.7 and not cache_broken
        inner.attrs["app.cache_hit"] = hit
        t2 = t + self.work(tr, inner, t, 0.3, op=sp.name)
        if not hit:
            call = self.grpc(tr, inner, "product-catalog", "ListProducts", t2, self._pc_list)
            t2 = call.end
            if call.error:
                inner.end = t2
                self.fail(sp, t2, f"failed to list products: {call.error}", "grpc.RpcError", 13)
                sp.end = t2
                return
        inner.end = t2
        count = tr.rng.randint(3, 5)
        sp.attrs["app.products_recommended.count"] = count
        sp.attrs["app.products.count"] = len(PRODUCTS)
        self.log(sp, t2, "INFO", f"Receive ListRecommendations for product ids:[{sp.attrs.get('app.product.id')}]")
        sp.end = t2 + self.work(tr, sp, t2, 0.8)
        self.check_fail(tr, sp, sp.end)

    def _ads(self, tr: Trace, sp: SimSpan) -> None:
        targeted = tr.rng.random() < 0.6
        sp.attrs.update({"app.ads.ad_request_type": "TARGETED" if targeted else "NOT_TARGETED", "app.ads.count": 2})
        sp.end = sp.start + self.work(tr, sp, sp.start, 1.8, sigma=0.5)
        if not self.check_fail(tr, sp, sp.end):
            self.log(sp, sp.end, "INFO", f"Targeted ad request received for [{sp.attrs['app.ads.contextKeys']}]")

    def _payment(self, tr: Trace, sp: SimSpan) -> None:
        u = tr.user
        assert u is not None
        sp.attrs.update({"app.payment.card_type": u.card, "app.payment.card_valid": True,
                         "app.loyalty.level": u.loyalty})
        self.log(sp, sp.start, "INFO", "Charge request received.", **{"app.loyalty.level": u.loyalty})
        sp.end = sp.start + self.work(tr, sp, sp.start, 9.0, sigma=0.5)
        if not self.check_fail(tr, sp, sp.end):
            tx = f"{tr.rng.getrandbits(128):032x}"
            sp.attrs["app.payment.transaction.id"] = tx
            sp.attrs["app.payment.charged"] = True
            self.log(sp, sp.end, "INFO", "Transaction complete.", **{"app.payment.transaction.id": tx})

    def _quote(self, tr: Trace, sp: SimSpan) -> None:
        t = sp.start + self.work(tr, sp, sp.start, 2.0)
        inner = self.span(tr, sp.inst, "calculate-quote", SpanKind.INTERNAL, t, sp)
        inner.end = t + self.work(tr, inner, t, 0.6, op=sp.name)
        cost = round(tr.rng.uniform(5, 60), 2)
        inner.attrs["app.quote.cost.total"] = cost
        sp.attrs["app.quote.items.count"] = sp.attrs.get("app.quote.items.count", 1)
        self.log(sp, inner.end, "INFO", f"Calculated quote: {cost}")
        sp.end = inner.end + self.work(tr, sp, inner.end, 0.5)

    def _shipping_quote(self, tr: Trace, sp: SimSpan) -> None:
        u = tr.user
        assert u is not None
        sp.attrs.update({"app.shipping.address.country": u.country,
                         "app.shipping.international": str(u.country != "United States").lower(),
                         "app.shipping.zip_code": f"{tr.rng.randint(10000, 99999)}"})
        t = sp.start + self.work(tr, sp, sp.start, 0.3)
        call = self.http(tr, sp, "quote", "POST", "/getquote", "/getquote", t, self._quote)
        t = call.end + self.work(tr, sp, call.end, 0.2)
        sp.end = t
        if call.error:
            self.fail(sp, t, f"failed to get quote: {call.error}", "reqwest::Error", 13)
            return
        sp.attrs["app.shipping.cost.total"] = round(tr.rng.uniform(5, 60), 2)
        self.check_fail(tr, sp, t)

    def _ship_order(self, tr: Trace, sp: SimSpan) -> None:
        sp.end = sp.start + self.work(tr, sp, sp.start, 0.3)
        sp.attrs["app.shipping.tracking.id"] = f"{tr.rng.getrandbits(64):016x}"
        self.check_fail(tr, sp, sp.end)

    def _email(self, tr: Trace, sp: SimSpan) -> None:
        t = sp.start + self.work(tr, sp, sp.start, 6.0)
        inner = self.span(tr, sp.inst, "send_email", SpanKind.INTERNAL, t, sp)
        inner.end = t + self.work(tr, inner, t, 4.0, op=sp.name)
        sp.end = inner.end + self.work(tr, sp, inner.end, 1.0)
        if not self.check_fail(tr, sp, sp.end):
            self.log(sp, sp.end, "INFO", f"Order confirmation email sent to: {sp.attrs['app.email.recipient']}")

    def _place_order(self, tr: Trace, sp: SimSpan, items: list[tuple[str, int]]) -> None:
        u = tr.user
        assert u is not None
        rng = tr.rng
        order_id = f"{rng.getrandbits(128):032x}"
        sp.attrs.update({"app.order.id": order_id, "app.order.items.count": len(items)})
        self.log(sp, sp.start, "INFO", f"[PlaceOrder] user_id=\"{u.user_id}\" user_currency=\"{u.currency}\"")
        t = sp.start + self.work(tr, sp, sp.start, 1.0)
        prep = self.span(tr, sp.inst, "prepareOrderItemsAndShippingQuoteFromCart", SpanKind.INTERNAL, t, sp)
        steps: list[Callable[[int], SimSpan]] = [
            lambda t0: self.grpc(tr, prep, "cart", "GetCart", t0, self._cart_get, {"app.user.id": u.user_id})]
        for pid, _qty in items:
            steps.append(lambda t0, p=pid: self.grpc(tr, prep, "product-catalog", "GetProduct", t0, self._pc_get,
                                                     {"app.product.id": p}))
            steps.append(lambda t0: self.grpc(tr, prep, "currency", "Convert", t0,
                                              lambda tr2, s: self._currency_convert(tr2, s, "USD", u.currency)))
        steps.append(lambda t0: self.grpc(tr, prep, "shipping", "GetQuote", t0, self._shipping_quote,
                                          {"app.shipping.items.count": len(items)}))
        steps.append(lambda t0: self.grpc(tr, prep, "currency", "Convert", t0,
                                          lambda tr2, s: self._currency_convert(tr2, s, "USD", u.currency)))
        t = prep.start + self.work(tr, prep, prep.start, 0.2)
        for step in steps:
            child = step(t)
            t = child.end + int(rng.uniform(0.05, 0.2) * MS)
            if child.error:
                prep.end = t
                self.fail(sp, t, f"failed to prepare order: {child.error}", "Error", 13)
                sp.end = t + int(0.2 * MS)
                return
        prep.end = t
        if self.check_fail(tr, sp, t):  # a bad rollout's own failures
            sp.end = t + int(0.2 * MS)
            return
        pay = self.grpc(tr, sp, "payment", "Charge", t, self._payment,
                        {"app.payment.amount": round(rng.uniform(10, 900), 2)})
        t = pay.end
        if pay.error:
            self.fail(sp, t, f"failed to charge card: could not charge the card: {pay.error}", "Error", 13)
            sp.end = t + int(0.2 * MS)
            return
        self.log(sp, t, "INFO", f"payment went through (transaction_id: {rng.getrandbits(64):016x})")
        ship = self.grpc(tr, sp, "shipping", "ShipOrder", t + int(0.1 * MS), self._ship_order)
        t = ship.end
        if ship.error:
            self.fail(sp, t, f"shipping error: {ship.error}", "Error", 13)
            sp.end = t + int(0.2 * MS)
            return
        empty = self.grpc(tr, sp, "cart", "EmptyCart", t + int(0.1 * MS), self._cart_empty, {"app.user.id": u.user_id})
        t = empty.end
        if empty.error:
            self.log(sp, t, "WARN", f"failed to empty user cart during checkout: {empty.error}")
        email = self.http(tr, sp, "email", "POST", "/send_order_confirmation", "/send_order_confirmation",
                          t + int(0.1 * MS), self._email, {"app.order.id": order_id,
                                                           "app.email.recipient": f"{u.user_id}@example.com"})
        t = email.end
        if email.error:
            self.log(sp, t, "WARN", f"failed to send order confirmation to \"{u.user_id}@example.com\"")
        else:
            self.log(sp, t, "INFO", f"order confirmation email sent to \"{u.user_id}@example.com\"")
        overload = self.fx.kafka(t, "checkout")
        for i in range(1 + (overload.extra_messages if overload else 0)):
            t = self._publish(tr, sp, t, order_id, i)
        sp.attrs["app.shipping.tracking.id"] = ship.attrs.get("app.shipping.tracking.id", "")
        sp.end = t + self.work(tr, sp, t, 0.5)

    # ---- resource metrics --------------------------------------------------------------------

    JVM = ("java", "kotlin")

    def pods(self, t: int) -> list[Instance]:
        """Pods running at `t` (a rollout replaces a service's pods)."""
        return [i for s in SERVICES for i in self.instances(s, t)]

    def pod_gauges(self, t: int, interval_ns: int) -> dict[str, list[tuple[str, float, dict[str, Any]]]]:
        """Per pod (instance id): CPU, memory (and Kafka lag, JVM GC) at `t`; resets busy time.

        CPU follows the work the pod did in the interval; faults pin it (Cpu) or grow memory (Memory).
        """
        rng = self._gauges
        out: dict[str, list[tuple[str, float, dict[str, Any]]]] = {}
        node_cpu: dict[str, list[float]] = defaultdict(list)
        for inst in self.pods(t):
            spec = SERVICES[inst.service]
            m = self.metrics[inst.instance_id]
            busy = m.busy_ns / interval_ns
            m.busy_ns = 0
            cpu = spec.cpu_idle + busy * spec.cpu_per_busy_second * 8 + rng.gauss(0, 0.01)
            cpu = max(cpu, self.fx.cpu_floor(t, inst.service) + rng.gauss(0, 0.01))
            cpu = min(1.0, max(0.005, cpu))
            node_cpu[inst.node].append(cpu)
            minutes = (t - self.start_ns) / 60e9
            mem = spec.memory_mb * (1 + 0.04 * math.sin(minutes / 7) + rng.gauss(0, 0.01))
            if inst.language in self.JVM:  # heap sawtooth
                mem += spec.memory_mb * 0.15 * ((minutes % 5) / 5)
            mem += self.fx.leaked_mb(t, inst.service)
            points = [("k8s.pod.cpu.utilization", round(cpu, 4), {}),
                      ("k8s.pod.memory.working_set", float(int(mem * 1024 * 1024)), {})]
            if inst.service in self.CONSUMERS:
                points.append(("kafka.consumer.lag", float(max(0, self.queued[inst.service])), {
                    "messaging.destination.name": "orders", "messaging.consumer.group.name": inst.service}))
            if inst.language in self.JVM:
                self._record_gc(inst, t, interval_ns)
            out[inst.instance_id] = points
        self._node_cpu = {
            node: min(1.0, max(self.fx.cpu_floor(t, "", node) + rng.gauss(0, 0.005),
                               0.12 + 0.5 * sum(v) / max(1, len(v)) + rng.gauss(0, 0.01)))
            for node, v in node_cpu.items()}
        return out

    def node_cpu(self) -> dict[str, float]:
        """Node CPU utilization computed by the last `pod_gauges` call."""
        return dict(self._node_cpu)

    def _record_gc(self, inst: Instance, t: int, interval_ns: int) -> None:
        rng = self._gauges
        m = self.metrics[inst.instance_id]
        young = (("jvm.gc.action", "end of minor GC"), ("jvm.gc.name", "G1 Young Generation"))
        hist = m.hists.setdefault(("jvm.gc.duration", young), Hist(SECONDS_BOUNDS, self.start_ns))
        for _ in range(max(1, int(interval_ns / SEC / 6 + rng.random()))):
            hist.record(rng.uniform(0.003, 0.025))
        for eff in self.fx.gc_pauses(t, inst.service):
            major = (("jvm.gc.action", "end of major GC"), ("jvm.gc.name", "G1 Old Generation"))
            hist = m.hists.setdefault(("jvm.gc.duration", major), Hist(SECONDS_BOUNDS, self.start_ns))
            for _ in range(max(1, round(interval_ns / SEC / eff.period_s))):
                hist.record(eff.pause_s * rng.uniform(0.9, 1.1))

    # ---- Kafka -------------------------------------------------------------------------------

    CONSUMERS = ("accounting", "fraud-detection")

    def _publish(self, tr: Trace, sp: SimSpan, t: int, order_id: str, i: int) -> int:
        prod = self.span(tr, sp.inst, ORDERS_PUBLISH, SpanKind.PRODUCER, t, sp, {
            "messaging.system": "kafka", "messaging.destination.name": "orders",
            "messaging.operation.type": "publish", "messaging.operation.name": "send",
            "messaging.kafka.message.key": order_id, "server.address": "kafka", "server.port": 9092})
        prod.end = t + self.work(tr, prod, t, 0.4, op=ORDERS_PUBLISH)
        if i == 0:
            self.log(sp, prod.end, "INFO", "sending to postProcessor")
        link = (prod.trace_id, prod.span_id)
        for group in self.CONSUMERS:
            self.queued[group] += 1
            self._push(prod.end + int(tr.rng.uniform(1, 8) * MS),
                       lambda t0, r, g=group: self._consume(t0, r, g, order_id, link))
        return prod.end

    def _consume(self, t: int, rng: random.Random, group: str, order_id: str, link: tuple[int, int]) -> SimSpan | None:
        """One message taken by a single-threaded consumer: waits while the consumer is busy."""
        free = self.consumer_free_at[group]
        if free > t:  # still busy with earlier messages: come back when free (lag builds up here)
            self._push(free, lambda t0, r: self._consume(t0, r, group, order_id, link))
            return None
        tr = Trace(rng, None)
        sp = self.span(tr, self.pick(tr, group, t), ORDERS_PUBLISH.replace("publish", "process"), SpanKind.CONSUMER,
                       t, None, {"messaging.system": "kafka", "messaging.destination.name": "orders",
                                 "messaging.operation.type": "process", "messaging.operation.name": "poll",
                                 "messaging.consumer.group.name": group, "messaging.kafka.message.key": order_id})
        sp.links.append(link)
        work_ms = 1.5 if group == "accounting" else 2.5
        at = t + self.work(tr, sp, t, work_ms)
        overload = self.fx.kafka_any(t)
        if overload:
            delay = int(rng.uniform(*overload.consumer_delay_ms) * MS)
            at += delay
        if group == "accounting":
            db = self._db(tr, sp, at, "postgresql", "INSERT accounting.order",
                          "INSERT INTO accounting.order (order_id) VALUES ($1)", 1.2, "postgresql")
            at = db.end
            self.log(sp, at, "INFO", f"Order details: {{\"orderId\": \"{order_id}\"}}")
        else:
            self.log(sp, at, "INFO", f"Consumed record with orderId: {order_id}")
        sp.end = at + self.work(tr, sp, at, 0.3)
        self.consumer_free_at[group] = sp.end
        self.queued[group] -= 1
        self.record(sp)
        return sp
