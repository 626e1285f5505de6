"""Who may call each route of each service (SPEC §2, §13; OWASP API1, broken object-level
authorization), and the key matrix that holds every route to it.

`RULES` is the one table: `(service, method, path) -> Access`, the path as the route declares it.
Every route of every service app (built from its `create_app`, walked as FastAPI serves it) must
have a rule, or `unruled` names it and the key-matrix tests fail: a route added later without a
rule cannot slip through. Adding a route is adding its line here, for example
`("metering", "GET", "/v1/notes/{note_id}"): Access.OWN_BY_ID,`, and, when its path has a new
placeholder, its example value in `path_values`.

`key_matrix` sends each route the requests that show its rule (no key, an unknown key, the
intake key, each admin key, a client key on its own client and naming another) through a `Send`:
in process (tests/unit/test_key_matrix.py) or to the running system with real data
(tests/e2e/test_key_matrix.py, `with_data=True`: another client's document by id is 404, a
list without `client_id` holds the key's own documents only).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, Protocol
from urllib.parse import quote, urlencode

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from services.billing.app import BillingSettings
from services.billing.app import create_app as billing_app
from services.classifier.app import ClassifierSettings
from services.classifier.app import create_app as classifier_app
from services.console.app import ConsoleSettings
from services.console.app import create_app as console_app
from services.intake.app import IntakeSettings
from services.intake.app import create_app as intake_app
from services.metering.app import MeteringSettings
from services.metering.app import create_app as metering_app


class Access(Enum):
    """Who may call a route."""

    #: No key needed: health, metrics, API documents, the console's page.
    PUBLIC = "public"
    #: Intake keys only (SPEC §2: good only for posting work items; an admin key is 403).
    INTAKE = "intake"
    #: Admin keys only: every write, and whatever is not one client's (the console).
    ADMIN = "admin"
    #: Admin keys, or the client key of the client its path's `{client_id}` names: naming any
    #: other client, existing or not, is 403.
    OWN_CLIENT = "own client"
    #: A list: admin keys, or a client key, which gets its own client's documents only
    #: (`client_id` left out) and a 403 for a `client_id` filter naming another client.
    OWN_LIST = "own list"
    #: One document by id: admin keys, or a client key, to which another client's document is
    #: unknown (404, as if it did not exist).
    OWN_BY_ID = "own by id"


#: (service, method, path) → who may call it: one line per route.
RULES: Final[Mapping[tuple[str, str, str], Access]] = {
    ("intake", "POST", "/v1/work-items"): Access.INTAKE,
    ("metering", "GET", "/v1/usage/{client_id}"): Access.OWN_CLIENT,
    ("metering", "GET", "/v1/service-levels/{client_id}"): Access.OWN_CLIENT,
    ("billing", "PUT", "/v1/agreements/{client_id}"): Access.ADMIN,
    ("billing", "GET", "/v1/agreements/{client_id}"): Access.OWN_CLIENT,
    ("billing", "POST", "/v1/periods/{period}/close"): Access.ADMIN,
    ("billing", "GET", "/v1/invoices"): Access.OWN_LIST,
    ("billing", "GET", "/v1/invoices/{invoice_id}"): Access.OWN_BY_ID,
    ("billing", "GET", "/v1/forecast/{client_id}"): Access.OWN_CLIENT,
    ("billing", "GET", "/v1/recommendations/{client_id}"): Access.OWN_CLIENT,
    ("billing", "GET", "/v1/notes"): Access.OWN_LIST,
    ("billing", "GET", "/v1/notes/{note_id}"): Access.OWN_BY_ID,
    ("billing", "GET", "/v1/agreement-templates"): Access.ADMIN,
    ("billing", "GET", "/v1/agreement-templates/{name}"): Access.ADMIN,
    ("metering", "GET", "/v1/items"): Access.OWN_LIST,
    ("metering", "GET", "/v1/items/{client_id}/{item_id:path}"): Access.OWN_CLIENT,
    ("metering", "POST", "/v1/reclassifications"): Access.ADMIN,
    ("metering", "GET", "/v1/reclassifications"): Access.OWN_LIST,
    ("console", "GET", "/"): Access.PUBLIC,  # the static page; its JSON takes the admin key
    ("console", "GET", "/static/{file}"): Access.PUBLIC,
    ("console", "GET", "/api/overview"): Access.ADMIN,
    ("console", "GET", "/api/kafka"): Access.ADMIN,
    ("console", "GET", "/client"): Access.PUBLIC,  # the client page; its JSON takes a key
    ("console", "GET", "/api/client/overview"): Access.OWN_LIST,
    ("console", "GET", "/api/items"): Access.OWN_LIST,  # relayed to metering with the same key
    ("console", "GET", "/api/items/{client_id}/{item_id:path}"): Access.OWN_CLIENT,
    ("console", "GET", "/v1/dead-letters/{topic}"): Access.ADMIN,
    ("console", "GET", "/v1/dead-letters/{topic}/{partition}/{offset}"): Access.ADMIN,
    ("console", "POST", "/v1/dead-letters/{topic}/redrive"): Access.ADMIN,
}

SERVICES: Final = ("intake", "classifier", "metering", "billing", "console")
#: What every service serves without a key (shared/infra/http.py, FastAPI's documents).
_EVERY_SERVICE: Final = ("/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect")
_EVERY_SERVICE_ALSO: Final = ("/redoc",)
#: The AsyncAPI document and viewer of the services with a broker in FastStream's sense.
_ASYNCAPI: Final = ("/asyncapi.json", "/asyncapi")


def _public_everywhere() -> dict[tuple[str, str, str], Access]:
    public: dict[tuple[str, str, str], Access] = {}
    for service in SERVICES:
        paths = [*_EVERY_SERVICE, *_EVERY_SERVICE_ALSO]
        if service != "console":
            paths += _ASYNCAPI
        public |= {(service, "GET", path): Access.PUBLIC for path in paths}
    return public


#: Every rule: the table above and what every service serves without a key.
ALL_RULES: Final[Mapping[tuple[str, str, str], Access]] = {**_public_everywhere(), **RULES}


def path_values(client_id: str, period: str) -> dict[str, str]:
    """What each path placeholder is in a request about `client_id`'s documents of `period`:
    ids are the deterministic ones (SPEC §7 `<client>-<period>-1`, §10 `-n1`); the e2e test
    posts an item with id `ITEM_ID` for each client."""
    return {
        "client_id": client_id,
        "period": period,
        "invoice_id": f"{client_id}-{period}-1",
        "note_id": f"{client_id}-{period}-n1",
        "item_id": ITEM_ID,
        "topic": "workitems.completed",
        "partition": "0",
        "offset": "0",
        "name": "healthcare",
        "file": "console.js",
    }


ITEM_ID: Final = "item-0"


# --- the apps and their routes -----------------------------------------------------------------


@dataclass(frozen=True)
class KeySet:
    """The keys the services are started with: two admin keys (a rotation), one intake key, and
    a client key per client."""

    admin: tuple[str, str]
    intake: str
    clients: Mapping[str, str]

    def settings(self) -> dict[str, Any]:
        """The key settings, as `create_app`'s settings take them."""
        return {
            "tierline_admin_key": ",".join(self.admin),
            "tierline_intake_keys": f"jira={self.intake}",
            "tierline_client_keys": ",".join(f"{c}={k}" for c, k in self.clients.items()),
        }

    def env(self) -> dict[str, str]:
        """The same as environment variables, for services started as processes."""
        return {name.upper(): str(value) for name, value in self.settings().items()}


def service_apps(keys: KeySet) -> dict[str, FastAPI]:
    """Each service's app as its `create_app` builds it: building one connects to nothing (the
    broker and pool start in the lifespan), so the routes are the real ones."""
    kafka: dict[str, Any] = {"kafka_bootstrap_servers": "127.0.0.1:1"}
    database: dict[str, Any] = {"database_url": "postgresql://nobody@127.0.0.1:1/none"}
    keyed = {**kafka, **keys.settings()}
    return {
        "intake": intake_app(IntakeSettings(**keyed)),
        "classifier": classifier_app(ClassifierSettings(**kafka)),
        "metering": metering_app(MeteringSettings(**keyed, **database)),
        "billing": billing_app(BillingSettings(**keyed, **database)),
        "console": console_app(ConsoleSettings(**keyed, **database)),
    }


def routes_of(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers' and mounts' alike (a
    mount as `<path>/{file}`); HEAD, which Starlette adds to GET, is left out."""
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, Mount):
            yield "GET", f"{route.path}/{{file}}"
            continue
        for method in sorted(context.methods or ()):
            if method != "HEAD":
                yield method, str(context.path)


def every_route(apps: Mapping[str, FastAPI]) -> list[tuple[str, str, str]]:
    return [(service, *route) for service, app in apps.items() for route in routes_of(app)]


def unruled(
    apps: Mapping[str, FastAPI], rules: Mapping[tuple[str, str, str], Access] = ALL_RULES
) -> list[tuple[str, str, str]]:
    """The routes no rule covers: each must get its line in RULES."""
    return [route for route in every_route(apps) if route not in rules]


def stale(
    apps: Mapping[str, FastAPI], rules: Mapping[tuple[str, str, str], Access] = ALL_RULES
) -> list[tuple[str, str, str]]:
    """The rules naming no route (a route renamed or gone)."""
    served = set(every_route(apps))
    return [route for route in rules if route not in served]


# --- the matrix ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeclaredOnly:
    """A request body declared (`Content-Length`) and never sent: answered without reading it,
    or the request hangs."""

    length: int


Body = bytes | DeclaredOnly | None


@dataclass(frozen=True)
class Answer:
    status: int
    #: The JSON body, or None when there is none.
    json: Any = None


class Send(Protocol):
    """Sends `method target` (path and query) to `service` with `key` (None: no Authorization
    header) and `body`."""

    def __call__(
        self, service: str, method: str, target: str, key: str | None, body: Body = None
    ) -> Awaitable[Answer]: ...


#: A body no route could parse: an allowed write answers it 4xx and changes nothing.
MALFORMED: Final = b"{not json"
#: Over every service's body limit (intake's is 10 MiB).
OVERSIZE: Final = DeclaredOnly(64 * 1024 * 1024)
UNKNOWN_KEY: Final = "not-a-tierline-key-0123456789"


def target(path: str, values: Mapping[str, str], query: Mapping[str, str]) -> str:
    """`path` with its placeholders filled; a placeholder `path_values` lacks is a KeyError
    that says what to add."""
    filled = path
    for placeholder in _placeholders(path):
        name = placeholder.split(":")[0]  # `{item_id:path}`: the name before its convertor
        if name not in values:
            raise KeyError(f"{path}: give {{{name}}} an example value in tests.access.path_values")
        filled = filled.replace(f"{{{placeholder}}}", quote(values[name], safe=""))
    return f"{filled}?{urlencode(query)}" if query else filled


def _placeholders(path: str) -> list[str]:
    return [part.split("}")[0] for part in path.split("{")[1:]]


def _allowed(status: int) -> bool:
    return status not in (401, 403)


@dataclass
class Matrix:
    """Runs the requests of one route and records each answer that breaks its rule."""

    send: Send
    keys: KeySet
    own: str
    other: str
    period: str
    with_data: bool
    problems: list[str] = field(default_factory=list)

    def check(self, what: str, answer: Answer, ok: Callable[[int], bool], wanted: str) -> bool:
        if ok(answer.status):
            return True
        self.problems.append(f"{what}: {answer.status}, wanted {wanted} ({answer.json!r:.200})")
        return False

    async def route(self, service: str, method: str, path: str, access: Access) -> None:
        write = method not in ("GET", "HEAD")
        body = MALFORMED if write else None
        # Every GET names the period: the routes that need one (usage, items, service levels)
        # read it, the others ignore it.
        query = {} if write else {"period": self.period}
        mine = target(path, path_values(self.own, self.period), query)
        name = f"{method} {path}"

        async def ask(key: str | None, where: str = mine, sent: Body = body) -> Answer:
            return await self.send(service, method, where, key, sent)

        public = access is Access.PUBLIC
        for label, key in (("no key", None), ("an unknown key", UNKNOWN_KEY)):
            if public:
                self.check(f"{name} with {label}", await ask(key), _allowed, "no 401/403")
            else:
                self.check(f"{name} with {label}", await ask(key), lambda s: s == 401, "401")

        intake_ok = public or access is Access.INTAKE
        answer = await ask(self.keys.intake)
        if intake_ok:
            self.check(f"{name} with the intake key", answer, _allowed, "no 401/403")
        else:
            self.check(f"{name} with the intake key", answer, lambda s: s == 403, "403")

        for n, admin in enumerate(self.keys.admin, 1):
            answer = await ask(admin)
            if access is Access.INTAKE:
                self.check(f"{name} with admin key {n}", answer, lambda s: s == 403, "403")
            else:
                self.check(f"{name} with admin key {n}", answer, _allowed, "no 401/403")

        client = self.keys.clients[self.own]
        if access in (Access.ADMIN, Access.INTAKE):
            self.check(f"{name} with a client key", await ask(client), lambda s: s == 403, "403")
            if write:  # SPEC §13: 403 whatever the body, decided before it is read
                for sent, how in ((b"", "no body"), (OVERSIZE, "a body over the limit")):
                    self.check(
                        f"{name} with a client key and {how}",
                        await ask(client, sent=sent),
                        lambda s: s == 403,
                        "403",
                    )
            return
        own_answer = await ask(client)
        self.check(f"{name} with the client key of {self.own}", own_answer, _allowed, "no 401/403")
        if public:
            return
        if not write:  # SPEC §13: a body on a GET is ignored
            with_body = await ask(client, sent=MALFORMED)
            self.check(
                f"{name} with the client key and a body on the GET",
                with_body,
                lambda s: s == own_answer.status,
                f"{own_answer.status} as without it",
            )
        if access is Access.OWN_CLIENT:
            await self.other_client_in_path(name, path, query, ask, client)
        elif access is Access.OWN_LIST:
            await self.own_list(name, path, query, ask, client, own_answer)
        elif access is Access.OWN_BY_ID:
            await self.other_by_id(name, path, query, ask, client, own_answer)

    async def other_client_in_path(
        self,
        name: str,
        path: str,
        query: Mapping[str, str],
        ask: Callable[..., Awaitable[Answer]],
        client: str,
    ) -> None:
        for whom in (self.other, f"nobody-{self.own}", "NOT A CLIENT"):
            theirs = target(path, path_values(whom, self.period), query)
            self.check(
                f"{name} naming {whom!r} with the client key of {self.own}",
                await ask(client, theirs),
                lambda s: s == 403,
                "403",
            )

    async def own_list(
        self,
        name: str,
        path: str,
        query: Mapping[str, str],
        ask: Callable[..., Awaitable[Answer]],
        client: str,
        own_answer: Answer,
    ) -> None:
        for whom in (self.other, f"nobody-{self.own}"):
            theirs = target(path, path_values(self.own, self.period), {**query, "client_id": whom})
            self.check(
                f"{name} filtered on {whom!r} with the client key of {self.own}",
                await ask(client, theirs),
                lambda s: s == 403,
                "403",
            )
        filtered = target(
            path, path_values(self.own, self.period), {**query, "client_id": self.own}
        )
        self.check(
            f"{name} filtered on its own client with the client key",
            await ask(client, filtered),
            _allowed,
            "no 401/403",
        )
        if not self.with_data:
            return
        if not self.check(f"{name} with the client key", own_answer, lambda s: s == 200, "200"):
            return
        mine = _documents(own_answer.json)
        strangers = [d.get("client_id") for d in mine if d.get("client_id") != self.own]
        if strangers:
            self.problems.append(f"{name} with the client key of {self.own} lists {strangers}")
        everyone = await ask(self.keys.admin[0])
        if everyone.status == 200:
            all_documents = _documents(everyone.json)
            expected = [d for d in all_documents if d.get("client_id") == self.own]
            if mine != expected:
                self.problems.append(
                    f"{name}: the client key of {self.own} lists {len(mine)} documents, "
                    f"the admin key {len(expected)} of that client"
                )
            if not any(d.get("client_id") == self.other for d in all_documents):
                self.problems.append(f"{name}: no document of {self.other} to hide (the data)")

    async def other_by_id(
        self,
        name: str,
        path: str,
        query: Mapping[str, str],
        ask: Callable[..., Awaitable[Answer]],
        client: str,
        own_answer: Answer,
    ) -> None:
        theirs = target(path, path_values(self.other, self.period), query)
        answer = await ask(client, theirs)
        if not self.with_data:
            self.check(f"{name}: another client's id", answer, _allowed, "no 401 or 403")
            return
        self.check(
            f"{name}: another client's, with a client key", answer, lambda s: s == 404, "404"
        )
        admin = await ask(self.keys.admin[0], theirs)
        self.check(
            f"{name}: another client's, with the admin key", admin, lambda s: s == 200, "200"
        )
        # Documents whose ids the data holds (invoices) are found with the client's own key.
        if admin.status == 200 and self.check(
            f"{name}: its own, with the client key", own_answer, lambda s: s == 200, "200"
        ):
            owner = own_answer.json.get("client_id") if isinstance(own_answer.json, dict) else None
            if owner != self.own:
                self.problems.append(f"{name}: the client key of {self.own} got {owner}'s")


def _documents(body: Any) -> list[dict[str, Any]]:
    """The documents of a list answer (`{"invoices": [...]}` and the like)."""
    if not isinstance(body, dict):
        return []
    lists = [value for value in body.values() if isinstance(value, list)]
    return [d for d in lists[0] if isinstance(d, dict)] if len(lists) == 1 else []


async def key_matrix(
    send: Send,
    routes: Iterable[tuple[str, str, str]],
    keys: KeySet,
    *,
    own: str,
    other: str,
    period: str,
    with_data: bool,
    rules: Mapping[tuple[str, str, str], Access] = ALL_RULES,
) -> list[str]:
    """Every way each of `routes` breaks its rule, as one line each (empty: none). `own` and
    `other` are two clients with client keys in `keys`."""
    matrix = Matrix(send, keys, own, other, period, with_data)
    for service, method, path in routes:
        access = rules.get((service, method, path))
        if access is None:
            matrix.problems.append(f"{service} {method} {path}: no access rule in tests/access.py")
            continue
        await matrix.route(service, method, path, access)
    return matrix.problems
