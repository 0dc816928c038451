r"""The simulated system: services, their endpoints and the call graph.

Two entry services take user traffic (checkout, search); checkout calls
inventory and payments, and every service below the edge queries the database
tier. Every endpoint of a caller calls the same downstream services, so a
downstream fault reaches all of a caller's requests (a fault is either plainly
visible in a caller or not at all, never a sliver of it).

    checkout --> inventory --> database
             \-> payments  --> database
    search   -------------------> database

Latency is a per-endpoint lognormal "self time"; a span's latency is its self
time plus the latency of the children it calls (sequentially).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SERVICES = ("checkout", "payments", "search", "inventory", "database")
ROOT_SHARES = {"checkout": 0.4, "search": 0.6}  # share of root requests per entry service

# Caller -> callees (the service dependencies Spark will observe).
CALLS: dict[str, tuple[str, ...]] = {
    "checkout": ("inventory", "payments"),
    "inventory": ("database",),
    "payments": ("database",),
    "search": ("database",),
    "database": (),
}

# A child 5xx fails its parent with this probability (the rest are absorbed
# by a retry that the simulation does not emit as a separate span).
FAIL_PARENT_PROBABILITY = 0.95

# Natural (background) server-error probability per span, before propagation.
BASE_SERVER_ERROR = {"checkout": 0.002, "payments": 0.002, "search": 0.002, "inventory": 0.0015, "database": 0.001}

# Server-error messages a service emits itself (status, message).
SERVER_ERRORS: dict[str, tuple[tuple[int, str], ...]] = {
    "checkout": ((500, "internal error: order service exception"), (503, "checkout overloaded, shedding load")),
    "payments": ((503, "payment processor unavailable"), (500, "payment gateway error: unexpected response")),
    "inventory": ((500, "inventory service internal error"), (503, "inventory cache unavailable")),
    "search": ((500, "search index shard failure"), (503, "search cluster overloaded")),
    "database": ((503, "connection pool exhausted"), (500, "deadlock detected"), (504, "statement timeout")),
}
# What a database fault looks like in a cascade: timeouts first.
CASCADE_ERRORS = ((504, "statement timeout"), (504, "statement timeout"), (503, "connection pool exhausted"))


@dataclass(frozen=True, slots=True)
class ClientError:
    probability: float
    status: int
    message: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str  # OpenTelemetry-style span name: "METHOD /route" or "STATEMENT table"
    weight: float  # share of the service's own traffic (entry services only)
    self_ms: float  # median self time
    sigma: float  # lognormal shape of the self time
    calls: tuple[tuple[str, str], ...] = ()  # (child service, child endpoint), in call order
    client_errors: tuple[ClientError, ...] = ()
    attributes: dict = field(default_factory=dict)


def _http(method: str, route: str) -> dict:
    return {"http.method": method, "http.route": route}


ENDPOINTS: dict[str, dict[str, Endpoint]] = {
    "checkout": {
        "POST /api/checkout": Endpoint(
            "POST /api/checkout",
            0.55,
            30.0,
            0.30,
            calls=(("inventory", "POST /inventory/reserve"), ("payments", "POST /payments/charge")),
            client_errors=(
                ClientError(0.010, 422, "invalid shipping address"),
                ClientError(0.004, 400, "coupon expired"),
            ),
            attributes=_http("POST", "/api/checkout"),
        ),
        "GET /api/cart": Endpoint(
            "GET /api/cart",
            0.45,
            14.0,
            0.30,
            calls=(("inventory", "GET /inventory/stock"), ("payments", "GET /payments/methods")),
            attributes=_http("GET", "/api/cart"),
        ),
    },
    "inventory": {
        "POST /inventory/reserve": Endpoint(
            "POST /inventory/reserve",
            0,
            22.0,
            0.30,
            calls=(("database", "UPDATE stock"),),
            client_errors=(ClientError(0.008, 409, "insufficient stock"),),
            attributes=_http("POST", "/inventory/reserve"),
        ),
        "GET /inventory/stock": Endpoint(
            "GET /inventory/stock",
            0,
            14.0,
            0.30,
            calls=(("database", "SELECT stock"),),
            attributes=_http("GET", "/inventory/stock"),
        ),
    },
    "payments": {
        "POST /payments/charge": Endpoint(
            "POST /payments/charge",
            0,
            85.0,
            0.30,
            calls=(("database", "INSERT payments"),),
            client_errors=(ClientError(0.020, 402, "card declined"), ClientError(0.005, 402, "insufficient funds")),
            attributes=_http("POST", "/payments/charge"),
        ),
        "GET /payments/methods": Endpoint(
            "GET /payments/methods",
            0,
            16.0,
            0.30,
            calls=(("database", "SELECT payment_methods"),),
            attributes=_http("GET", "/payments/methods"),
        ),
    },
    "search": {
        "GET /api/search": Endpoint(
            "GET /api/search",
            0.60,
            30.0,
            0.30,
            calls=(("database", "SELECT products"),),
            client_errors=(ClientError(0.003, 400, "query too long"),),
            attributes=_http("GET", "/api/search"),
        ),
        "GET /api/search/suggest": Endpoint(
            "GET /api/search/suggest",
            0.25,
            12.0,
            0.30,
            calls=(("database", "SELECT suggestions"),),
            attributes=_http("GET", "/api/search/suggest"),
        ),
        "GET /api/products/{id}": Endpoint(
            "GET /api/products/{id}",
            0.15,
            15.0,
            0.30,
            calls=(("database", "SELECT product_details"),),
            client_errors=(ClientError(0.030, 404, "product not found"),),
            attributes=_http("GET", "/api/products/{id}"),
        ),
    },
    "database": {
        name: Endpoint(name, 0, ms, 0.35, attributes={"db.system": "postgresql", "db.operation": name.split()[0]})
        for name, ms in (
            ("UPDATE stock", 14.0),
            ("SELECT stock", 8.0),
            ("INSERT payments", 12.0),
            ("SELECT payment_methods", 8.0),
            ("SELECT products", 22.0),
            ("SELECT suggestions", 9.0),
            ("SELECT product_details", 8.0),
        )
    },
}

# Child 4xx -> what the parent answers (the client error travels up as a client error).
CLIENT_ERROR_PROPAGATION = {
    "card declined": (402, "payment declined: card declined"),
    "insufficient funds": (402, "payment declined: insufficient funds"),
    "insufficient stock": (409, "item out of stock"),
}

HOSTS_PER_SERVICE = 3


def ancestors(service: str) -> set[str]:
    """Services that call `service`, directly or transitively."""
    out: set[str] = set()
    frontier = [service]
    while frontier:
        s = frontier.pop()
        for caller, callees in CALLS.items():
            if s in callees and caller not in out:
                out.add(caller)
                frontier.append(caller)
    return out


def descendants(service: str) -> set[str]:
    out: set[str] = set()
    frontier = [service]
    while frontier:
        for child in CALLS[frontier.pop()]:
            if child not in out:
                out.add(child)
                frontier.append(child)
    return out


def entry_endpoints(service: str) -> tuple[list[Endpoint], list[float]]:
    eps = [e for e in ENDPOINTS[service].values() if e.weight > 0]
    return eps, [e.weight for e in eps]


def validate_topology() -> None:
    """Every call names an existing endpoint (checked by the tests)."""
    for service, eps in ENDPOINTS.items():
        for ep in eps.values():
            for child, child_ep in ep.calls:
                assert child in CALLS[service], (service, child)
                assert child_ep in ENDPOINTS[child], (child, child_ep)
