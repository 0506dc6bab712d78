"""Log statement catalogues: what each runtime writes, with realistic variables.

A template is a Python format string whose fields are variables: `{uuid}`, `{ms}`, `{ip}`, `{trip}`
... (see `VARIABLES`), or values the log module supplies from the simulation (`{peer}`, `{port}`,
`{path}`, `{attempt}`, `{line}`, `{method}` ...). Handler-specific templates are made per operation
from its method name (`request_templates`): Java services log Spring/TrainTicket style with the
`Class#line` of the statement in the carried source tree, Go services logrus key-values, Node and
Python gRPC servers their own phrasing, data stores their slow-query and housekeeping logs.
Error messages depend on the caller's runtime and on what went wrong (timeout, refused connection,
DNS, TLS, pool exhaustion, a 5xx from the callee).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_pipeline.chaos import simulate as sim

Generator = Callable[[np.random.Generator, int], np.ndarray | pa.Array]

_STATIONS = ("shanghai", "beijing", "nanjing", "suzhou", "taiyuan", "shijiazhuang", "wuxi", "zhenjiang",
             "xuzhou", "jinan", "hangzhou", "shanghaihongqiao", "jiaxingnan")
_TRAINS = ("GaoTieOne", "GaoTieTwo", "DongCheOne", "ZhiDa", "TeKuai", "KuaiSu")
_PRODUCTS = ("OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O", "L9ECAV7KIM", "2ZYFJ3GM2N", "0PUK6V6EV0", "LS4PSXUNUM",
             "9SIQT8TOJO", "6E92ZMYYFZ")
_CURRENCIES = ("USD", "EUR", "JPY", "GBP", "CAD", "TRY")
_WORDS = ("clothing", "accessories", "footwear", "hair", "decor", "kitchen", "vintage", "cycling")
_USERS = ("fdse_microservice", "admin", "alice", "bob", "user_7781", "jdoe", "m.tanaka", "li.wei")
_ENDPOINTS = ("/actuator/health", "/healthz", "/metrics", "/readyz")


def _choice(values: tuple[str, ...]) -> Generator:
    arr = np.array(values, dtype=object)
    return lambda rng, n: arr[rng.integers(0, arr.size, n)]


def _hex(chars: int) -> Generator:
    def gen(rng: np.random.Generator, n: int) -> np.ndarray:
        words = -(-chars // 16)
        raw = rng.integers(0, 2**63, size=(n, words), dtype=np.int64).astype(">u8").tobytes().hex().encode()
        return np.frombuffer(raw, dtype=f"S{16 * words}").astype(f"U{chars}")     # (n,) truncated to `chars`
    return gen


def _uuid(rng: np.random.Generator, n: int) -> pa.Array:
    """Version-4 UUIDs, assembled by Arrow string kernels."""
    h = pa.array(_hex(32)(rng, n))

    def part(start: int, stop: int) -> pa.Array:
        return pc.utf8_slice_codeunits(h, start, stop)

    return pc.binary_join_element_wise(part(0, 8), part(8, 12), pc.binary_join_element_wise(
        pa.scalar("4"), part(13, 16), ""), pc.binary_join_element_wise(pa.scalar("a"), part(17, 20), ""),
        part(20, 32), "-")


def _ints(lo: int, hi: int) -> Generator:
    return lambda rng, n: rng.integers(lo, hi, n).astype(str).astype(object)


def _ip(rng: np.random.Generator, n: int) -> np.ndarray:
    a, b = rng.integers(0, 8, n), rng.integers(2, 250, n)
    return np.array([f"10.4{x}.{y // 60}.{y}" for x, y in zip(a, b, strict=True)], dtype=object)


def _amount(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.char.mod("%.2f", rng.lognormal(np.log(60), 0.8, n)).astype(object)


def _trip(rng: np.random.Generator, n: int) -> np.ndarray:
    letters = np.array(list("GDZTK"), dtype=object)[rng.integers(0, 5, n)]
    return letters + rng.integers(1234, 1240, n).astype(str).astype(object)


def _date(rng: np.random.Generator, n: int) -> np.ndarray:
    days = rng.integers(1, 29, n)
    return np.array([f"2024-06-{d:02d}" for d in days], dtype=object)


def _email(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.asarray(_choice(_USERS)(rng, n)) + "@example.com"


VARIABLES: dict[str, Generator] = {
    "uuid": _uuid, "hex8": _hex(8), "hex16": _hex(16), "oid": _hex(24), "num": _ints(1000, 999_999),
    "qty": _ints(1, 6), "ip": _ip, "port": _ints(32768, 61000), "amount": _amount, "trip": _trip,
    "station": _choice(_STATIONS), "train": _choice(_TRAINS), "product": _choice(_PRODUCTS),
    "currency": _choice(_CURRENCIES), "word": _choice(_WORDS), "user": _choice(_USERS), "email": _email,
    "date": _date, "last4": _ints(1000, 9999), "seat": _ints(1, 90), "bytes": _ints(200, 90_000),
    "conns": _ints(3, 40), "gcms": _ints(3, 40), "heap": _ints(180, 900), "endpoint": _choice(_ENDPOINTS),
    "keys": _ints(1000, 40_000), "docs": _ints(100, 500_000), "pid": _ints(1, 300),
}

# (token in the method name, the id the handler logs, its variable).
_SUBJECTS = (
    ("Order", "OrderId", "uuid"), ("Trip", "TripId", "trip"), ("Travel", "TripId", "trip"),
    ("Station", "StationName", "station"), ("Route", "RouteId", "uuid"), ("Train", "TrainType", "train"),
    ("Price", "RouteId", "uuid"), ("User", "UserId", "uuid"), ("Token", "UserName", "user"),
    ("Contact", "ContactsId", "uuid"), ("Food", "TripId", "trip"), ("Seat", "TrainNumber", "trip"),
    ("Consign", "OrderId", "uuid"), ("Assurance", "OrderId", "uuid"), ("Pay", "OrderId", "uuid"),
    ("Ticket", "OrderId", "uuid"), ("Config", "ConfigName", "word"), ("Product", "ProductId", "product"),
    ("Cart", "UserId", "uuid"), ("Currenc", "Currency", "currency"), ("Convert", "Currency", "currency"),
    ("Quote", "ItemCount", "qty"), ("Ship", "TrackingId", "uuid"), ("Charge", "Amount", "amount"),
    ("Email", "Email", "email"), ("Recommend", "UserId", "uuid"), ("Ads", "ContextWords", "word"),
)


def subject(method: str) -> tuple[str, str]:
    """(logged id name, variable) a handler mentions, from its method name."""
    for token, key, var in _SUBJECTS:
        if token.lower() in method.lower():
            return key, var
    return "RequestId", "uuid"


def describe(method: str) -> str:
    """`getRouteByRouteId` -> `Get Route By Route Id` (TrainTicket's log phrasing)."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", method.replace("_", " ")).split()
    return " ".join(w[:1].upper() + w[1:] for w in words)


# --- request-scoped templates ------------------------------------------------------------------------

def request_templates(runtime: str, method: str, span_name: str) -> tuple[str, str, str]:
    """(entry, exit, debug) templates of a handler; `{logger}`, `{entry_line}`, `{exit_line}` are filled later."""
    key, var = subject(method)
    desc = describe(method)
    if runtime == "java":
        return (f"{{logger}}#{{entry_line}} [{method}][{desc}][{key}: {{{var}}}]",
                f"{{logger}}#{{exit_line}} [{method}][{desc} success][{key}: {{{var}}}, cost: {{ms_int}} ms]",
                f"{{logger}}#{{entry_line}} [{method}][{desc}][query params: {key}={{{var}}}, page=1, size=20]")
    if runtime == "go":
        if span_name.startswith(("GET ", "POST ", "PUT ", "DELETE ")):
            verb, path = span_name.split(" ", 1)
            path = path.replace("{id}", "{product}")
            return (f'request started http.req.id={{uuid}} http.req.method={verb} http.req.path={path} '
                    f'session={{uuid}}',
                    f'request complete http.req.id={{uuid}} http.req.method={verb} http.req.path={path} '
                    f'http.resp.bytes={{bytes}} http.resp.status=200 http.resp.took_ms={{ms_int}}',
                    f'currency={{currency}} http.req.path={path} retrieved products count={{qty}}')
        return (f"[{method}] received request {key.lower()}={{{var}}}",
                f"[{method}] completed request in {{ms}}ms",
                f"[{method}] request payload: {key}={{{var}}}")
    if runtime == "node":
        return (f"received {describe(method).lower()} request {key}={{{var}}}",
                f"{describe(method).lower()} request successful",
                f"{method}: payload {{bytes}} bytes")
    if runtime == "python":
        return (f"[Recv {method}] {key.lower()}={{{var}}}",
                f"[{method}] responded in {{ms}} ms",
                f"[{method}] cache lookup key={{hex16}}")
    if runtime == "csharp":
        return (f"{method}Async called with {key.lower()}={{{var}}}",
                f"{method}Async finished in {{ms}} ms",
                f"{method}Async: redis round trip {{ms}} ms")
    raise ValueError(f"no request templates for runtime {runtime}")


def business_warning(runtime: str, method: str) -> str:
    """A handler's benign warning: the request was fine, the answer is empty (no such id, nothing left)."""
    key, var = subject(method)
    desc = describe(method)
    return {"java": f"{{logger}}#{{exit_line}} [{method}][{desc}][{key} not found: {{{var}}}]",
            "go": f"[{method}] no results for {key.lower()}={{{var}}}",
            "node": f"{describe(method).lower()}: nothing found for {key}={{{var}}}",
            "python": f"[{method}] empty result for {key.lower()}={{{var}}}",
            "csharp": f"{method}Async: no entry for {key.lower()}={{{var}}}"}[runtime]


_JAVA_STEPS = ("Check {key}", "Query {desc}", "Convert result", "Build response")


def java_step(method: str, step: int) -> str:
    """A Spring handler's `step`-th business line between its entry and exit lines (TrainTicket's
    `[getRestTicketNumber][Seat request][request: Seat(...)]`)."""
    key, var = subject(method)
    phase = _JAVA_STEPS[step % len(_JAVA_STEPS)].format(key=key, desc=describe(method))
    return f"{{logger}}#{{entry_line}} [{method}][{phase}][{key}: {{{var}}}]"


def step_counts(system: str, n_ops: int) -> np.ndarray:
    """Business lines each Spring handler writes between entry and exit, 0-3 (1.25 on average), drawn per
    system: the real TrainTicket writes 3.3 lines per controller span, entry and exit included."""
    rng = np.random.default_rng(zlib.crc32(f"steps:{system}".encode()))
    return rng.choice(4, size=n_ops, p=[0.2, 0.45, 0.25, 0.1])


def business_error(runtime: str, method: str) -> str:
    """A handler's benign error: a sub-step failed and was swallowed, the request still succeeded
    (TrainTicket's `[getRoutesByRouteIds][Get Route By Ids Failed]`)."""
    key, var = subject(method)
    desc = describe(method)
    return {"java": f"{{logger}}#{{exit_line}} [{method}][{desc} Failed][{key}: {{{var}}}]",
            "go": f"[{method}] {desc.lower()} failed for {key.lower()}={{{var}}}, using defaults",
            "node": f"{desc.lower()} failed for {key}={{{var}}}; continuing",
            "python": f"[{method}] {desc.lower()} failed for {key.lower()}={{{var}}}; ignored",
            "csharp": f"{method}Async: {desc.lower()} failed for {key.lower()}={{{var}}}"}[runtime]


def benign_rates(system: str, n_ops: int) -> tuple[np.ndarray, np.ndarray]:
    """(warning rate, error rate) per operation: the share of its handled requests that end with a benign
    warning and with a benign error line.

    Real services are uneven: a few handlers warn on most calls (TrainTicket's `getSoldTickets` logs "Left
    ticket info is empty" on nearly every search) or log a swallowed sub-step failure at ERROR, most seldom
    do; fault-free TrainTicket logs are 4.5% WARN and 1.1% ERROR. Drawn per system, so the same handlers
    are the noisy ones in every incident of it: warnings on 40% of handlers at 5-70% of their calls (else
    1%), errors on 10% of handlers at 5-40% (else none).
    """
    rng = np.random.default_rng(zlib.crc32(f"benign:{system}".encode()))
    noisy_warn, warn = rng.random(n_ops) < 0.4, rng.uniform(0.05, 0.7, n_ops)
    noisy_error, error = rng.random(n_ops) < 0.1, rng.uniform(0.05, 0.4, n_ops)
    return np.where(noisy_warn, warn, 0.01), np.where(noisy_error, error, 0.0)

# Hand-written lines of the web shop (Online Boutique's own wording) override the generated ones.
OVERRIDES: dict[tuple[str, str], tuple[str, str]] = {
    ("paymentservice", "Charge"): ("received charge request",
                                   "Transaction processed: visa ending {last4} Amount: {currency}{amount}"),
    ("currencyservice", "Convert"): ("received conversion request", "conversion request successful"),
    ("currencyservice", "GetSupportedCurrencies"): ("Getting supported currencies...",
                                                    "request successful"),
    ("emailservice", "SendOrderConfirmation"): (
        "A request to send order confirmation email to {email} has been received.",
        "Order confirmation email sent to {email}"),
    ("recommendationservice", "ListRecommendations"): ("[Recv ListRecommendations] product_ids=['{product}', "
                                                       "'{product}', '{product}']",
                                                       "[ListRecommendations] returned 5 products"),
    ("adservice", "GetAds"): ("received ad request (context_words=[{word}])", "served 2 ads"),
    ("shippingservice", "GetQuote"): ("[GetQuote] received request", "[GetQuote] completed request"),
    ("shippingservice", "ShipOrder"): ("[ShipOrder] received request", "[ShipOrder] completed request"),
    ("checkoutservice", "PlaceOrder"): ('[PlaceOrder] user_id="{uuid}" user_currency="{currency}"',
                                        "payment went through (transaction_id: {uuid})"),
    ("cartservice", "GetCart"): ("GetCartAsync called with userId={uuid}", "GetCartAsync returned {qty} items"),
    ("cartservice", "AddItem"): ("AddItemAsync called with userId={uuid}, productId={product}, quantity={qty}",
                                 "AddItemAsync stored cart for userId={uuid}"),
    ("cartservice", "EmptyCart"): ("EmptyCartAsync called with userId={uuid}", "EmptyCartAsync done"),
}


# --- errors a caller logs, by its runtime and the call's outcome ----------------------------------

_JAVA_IO = 'I/O error on {verb} request for "http://{peer}:{port}{path}": '
CLIENT_ERRORS: dict[str, dict[int, str]] = {
    "java": {
        sim.TIMEOUT: _JAVA_IO + "Read timed out; nested exception is java.net.SocketTimeoutException: Read timed out",
        sim.REFUSED: _JAVA_IO + "Connection refused (Connection refused); nested exception is "
                                "java.net.ConnectException: Connection refused (Connection refused)",
        sim.UNREACHABLE: _JAVA_IO + "connect timed out; nested exception is java.net.SocketTimeoutException: "
                                    "connect timed out",
        sim.NO_ENDPOINT: "503 Service Unavailable from {verb} http://{peer}:{port}{path}: [no healthy upstream]",
        sim.DNS: _JAVA_IO + "{peer}; nested exception is java.net.UnknownHostException: {peer}",
        sim.TLS: 'I/O error on {verb} request for "https://{peer}:{port}{path}": PKIX path validation failed: '
                 "java.security.cert.CertPathValidatorException: validity check failed; nested exception is "
                 "javax.net.ssl.SSLHandshakeException: PKIX path validation failed: "
                 "java.security.cert.CertPathValidatorException: validity check failed",
        sim.POOL: "HikariPool-1 - Connection is not available, request timed out after {ms_int}ms.",
        sim.BAD_RESPONSE: "500 Internal Server Error from {verb} http://{peer}:{port}{path}",
    },
    "go": {
        sim.TIMEOUT: "rpc error: code = DeadlineExceeded desc = context deadline exceeded",
        sim.REFUSED: 'rpc error: code = Unavailable desc = connection error: desc = "transport: Error while '
                     'dialing: dial tcp {peer_ip}:{port}: connect: connection refused"',
        sim.UNREACHABLE: 'rpc error: code = Unavailable desc = connection error: desc = "transport: Error while '
                         'dialing: dial tcp {peer_ip}:{port}: i/o timeout"',
        sim.NO_ENDPOINT: "rpc error: code = Unavailable desc = no healthy upstream",
        sim.DNS: 'rpc error: code = Unavailable desc = connection error: desc = "transport: Error while dialing: '
                 'dial tcp: lookup {peer} on 10.96.0.10:53: no such host"',
        sim.TLS: 'rpc error: code = Unavailable desc = connection error: desc = "transport: authentication '
                 'handshake failed: tls: failed to verify certificate: x509: certificate has expired or is not '
                 'yet valid: current time {now} is after {expiry}"',
        sim.POOL: "redis: connection pool timeout",
        sim.BAD_RESPONSE: "rpc error: code = Internal desc = {peer} failed to {method}",
    },
    "node": {
        sim.TIMEOUT: "Error: 4 DEADLINE_EXCEEDED: Deadline exceeded calling {peer}",
        sim.REFUSED: "Error: 14 UNAVAILABLE: connect ECONNREFUSED {peer_ip}:{port}",
        sim.UNREACHABLE: "Error: 14 UNAVAILABLE: connect ETIMEDOUT {peer_ip}:{port}",
        sim.NO_ENDPOINT: "Error: 14 UNAVAILABLE: No connection established to {peer}",
        sim.DNS: "Error: 14 UNAVAILABLE: Name resolution failed for target dns:{peer}:{port}",
        sim.TLS: "Error: 14 UNAVAILABLE: certificate has expired (CERT_HAS_EXPIRED) connecting to {peer}:{port}",
        sim.POOL: "Error: Timeout acquiring a connection. The pool is probably full.",
        sim.BAD_RESPONSE: "Error: 13 INTERNAL: {peer} returned an error",
    },
    "python": {
        sim.TIMEOUT: '<_InactiveRpcError of RPC that terminated with: status = StatusCode.DEADLINE_EXCEEDED '
                     'details = "Deadline Exceeded">',
        sim.REFUSED: '<_InactiveRpcError of RPC that terminated with: status = StatusCode.UNAVAILABLE details = '
                     '"failed to connect to all addresses; last error: UNKNOWN: ipv4:{peer_ip}:{port}: '
                     'Failed to connect to remote host: Connection refused">',
        sim.UNREACHABLE: '<_InactiveRpcError of RPC that terminated with: status = StatusCode.UNAVAILABLE '
                         'details = "failed to connect to all addresses; last error: UNKNOWN: '
                         'ipv4:{peer_ip}:{port}: Failed to connect to remote host: Timeout occurred">',
        sim.NO_ENDPOINT: '<_InactiveRpcError of RPC that terminated with: status = StatusCode.UNAVAILABLE '
                         'details = "no healthy upstream">',
        sim.DNS: '<_InactiveRpcError of RPC that terminated with: status = StatusCode.UNAVAILABLE details = '
                 '"DNS resolution failed for {peer}:{port}: C-ares status is not ARES_SUCCESS qtype=A '
                 'name={peer} is_balancer=0: Domain name not found">',
        sim.TLS: '<_InactiveRpcError of RPC that terminated with: status = StatusCode.UNAVAILABLE details = '
                 '"Ssl handshake failed: SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:'
                 'CERTIFICATE_VERIFY_FAILED: certificate has expired">',
        sim.POOL: "sqlalchemy.exc.TimeoutError: QueuePool limit of size 5 overflow 10 reached, connection timed "
                  "out, timeout 3.00",
        sim.BAD_RESPONSE: '<_InactiveRpcError of RPC that terminated with: status = StatusCode.INTERNAL '
                          'details = "Exception calling application">',
    },
    "csharp": {
        sim.TIMEOUT: "StackExchange.Redis.RedisTimeoutException: Timeout performing {op} ({ms_int}ms), "
                     "inst: 1, qs: {qty}, in: 0, serverEndpoint: {peer}:{port}",
        sim.REFUSED: "StackExchange.Redis.RedisConnectionException: No connection is active/available to service "
                     "this operation: {op}; It was not possible to connect to the redis server(s). "
                     "UnableToConnect on {peer}:{port}",
        sim.UNREACHABLE: "StackExchange.Redis.RedisConnectionException: It was not possible to connect to the "
                         "redis server(s). ConnectTimeout on {peer}:{port}",
        sim.NO_ENDPOINT: "StackExchange.Redis.RedisConnectionException: No connection is active/available to "
                         "service this operation: {op}",
        sim.DNS: "System.Net.Sockets.SocketException (00000001, 11): Resource temporarily unavailable "
                 "({peer}:{port})",
        sim.TLS: "System.Security.Authentication.AuthenticationException: The remote certificate is invalid "
                 "because of errors in the certificate chain: NotTimeValid",
        sim.POOL: "StackExchange.Redis.RedisTimeoutException: Timeout awaiting response, command={op}, "
                  "timeout: 5000, outbound=0KiB, inbound=0KiB, busy-workers: {qty}",
        sim.BAD_RESPONSE: "Grpc.Core.RpcException: Status(StatusCode=\"Internal\", Detail=\"{peer} failed\")",
    },
}

# A data-store driver's words for a failed call (the C# cart's Redis client has its own, above).
_JDBC_LINK = ("com.mysql.cj.jdbc.exceptions.CommunicationsException: Communications link failure\n\nThe last packet "
              "sent successfully to the server was 0 milliseconds ago. The driver has not received any packets from "
              "the server.")
STORE_CLIENT_ERRORS: dict[str, dict[int, str]] = {
    "mysql": {
        sim.TIMEOUT: "com.mysql.cj.jdbc.exceptions.MySQLTimeoutException: Statement cancelled due to timeout or "
                     "client request",
        sim.REFUSED: _JDBC_LINK, sim.NO_ENDPOINT: _JDBC_LINK,
        sim.UNREACHABLE: _JDBC_LINK + " Caused by: java.net.SocketTimeoutException: connect timed out",
        sim.DNS: _JDBC_LINK + " Caused by: java.net.UnknownHostException: {peer}: Name or service not known",
        sim.TLS: "javax.net.ssl.SSLHandshakeException: PKIX path validation failed: "
                 "java.security.cert.CertPathValidatorException: validity check failed",
        sim.POOL: "HikariPool-1 - Connection is not available, request timed out after {ms_int}ms.",
    },
    "postgres": {
        sim.TIMEOUT: "org.postgresql.util.PSQLException: ERROR: canceling statement due to statement timeout",
        sim.REFUSED: "org.postgresql.util.PSQLException: Connection to {peer}:5432 refused. Check that the hostname "
                     "and port are correct and that the postmaster is accepting TCP/IP connections.",
        sim.NO_ENDPOINT: "org.postgresql.util.PSQLException: Connection to {peer}:5432 refused.",
        sim.UNREACHABLE: "org.postgresql.util.PSQLException: The connection attempt failed. Caused by: "
                         "java.net.SocketTimeoutException: connect timed out",
        sim.DNS: "org.postgresql.util.PSQLException: The connection attempt failed. Caused by: "
                 "java.net.UnknownHostException: {peer}",
        sim.TLS: "org.postgresql.util.PSQLException: SSL error: PKIX path validation failed",
        sim.POOL: "HikariPool-1 - Connection is not available, request timed out after {ms_int}ms.",
    },
    "mongodb": {
        sim.TIMEOUT: "com.mongodb.MongoSocketReadTimeoutException: Timeout while receiving message",
        sim.REFUSED: "com.mongodb.MongoSocketOpenException: Exception opening socket; nested exception is "
                     "java.net.ConnectException: Connection refused (Connection refused)",
        sim.NO_ENDPOINT: "com.mongodb.MongoTimeoutException: Timed out after 30000 ms while waiting for a server "
                         "that matches ReadPreferenceServerSelector{{readPreference=primary}}",
        sim.UNREACHABLE: "com.mongodb.MongoSocketOpenException: Exception opening socket; nested exception is "
                         "java.net.SocketTimeoutException: connect timed out",
        sim.DNS: "com.mongodb.MongoSocketException: {peer}: Name or service not known",
        sim.TLS: "com.mongodb.MongoSocketWriteException: Exception sending message; nested exception is "
                 "javax.net.ssl.SSLHandshakeException: PKIX path validation failed",
        sim.POOL: "com.mongodb.MongoTimeoutException: Timed out after {ms_int} ms while waiting for a connection to "
                  "server {peer}:27017.",
    },
    "redis": {
        sim.TIMEOUT: "io.lettuce.core.RedisCommandTimeoutException: Command timed out after {ms_int} millisecond(s)",
        sim.REFUSED: "io.lettuce.core.RedisConnectionException: Unable to connect to {peer}:6379",
        sim.NO_ENDPOINT: "io.lettuce.core.RedisConnectionException: Unable to connect to {peer}:6379",
        sim.UNREACHABLE: "io.lettuce.core.RedisConnectionException: Unable to connect to {peer}:6379: "
                         "connection timed out",
        sim.DNS: "io.lettuce.core.RedisConnectionException: Unable to connect to {peer}:6379: "
                 "java.net.UnknownHostException: {peer}",
        sim.TLS: "io.lettuce.core.RedisConnectionException: Unable to connect to {peer}:6379: SSL handshake failed",
        sim.POOL: "redis.clients.jedis.exceptions.JedisExhaustedPoolException: Could not get a resource since the "
                  "pool is exhausted",
    },
}

# A store call that fails on the server side looks different from an RPC 5xx: a full disk, or a
# transient error (deadlock, interrupted operation) at the baseline rate.
STORE_TRANSIENT = {
    "mysql": "org.springframework.dao.DeadlockLoserDataAccessException: Deadlock found when trying to get lock; "
             "try restarting transaction",
    "postgres": "org.postgresql.util.PSQLException: ERROR: canceling statement due to conflict with recovery",
    "mongodb": "com.mongodb.MongoCommandException: Command failed with error 11601 (Interrupted): 'operation was "
               "interrupted' on server {peer}:27017",
    "redis": "LOADING Redis is loading the dataset in memory",
}
STORE_ERRORS = {
    "mysql": "org.springframework.dao.DataAccessResourceFailureException: Error writing file './ts/{table}.ibd' "
             "(errno: 28 - No space left on device)",
    "postgres": 'org.postgresql.util.PSQLException: ERROR: could not extend file "base/16384/{num}": '
                "No space left on device",
    "mongodb": "com.mongodb.MongoWriteException: Write operation error on server {peer}:27017. "
               "Write error: WriteError{{code=14031, message='Disk space is full'}}",
    "redis": "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
}

RETRY_TEMPLATES = {
    "java": "Retry '{peer}' recorded a failed retry attempt. Number of retry attempts: '{attempt}'. "
            "Waiting PT0.05S until the next attempt. Last exception was: {cause}",
    "go": "retrying {peer} (attempt {attempt}): {cause}",
    "node": "retrying call to {peer} (attempt {attempt}) after {cause}",
    "python": "Retrying {peer} call, attempt {attempt}: {cause}",
    "csharp": "Retry {attempt} for {peer} after {cause}",
}

FALLBACK_TEMPLATES = {
    "java": "{logger}#{entry_line} cache unavailable, falling back to database: {cause}",
    "go": "cache unavailable, reading {peer} from the database: {cause}",
    "node": "cache error, falling back to database: {cause}",
    "python": "cache error, falling back to database: {cause}",
    "csharp": "Cache unavailable, falling back: {cause}",
}

DEGRADED_TEMPLATES = {
    "java": "{logger}#{entry_line} [{method}][optional call to {peer} failed, continuing without it]",
    "go": "failed to retrieve ads from {peer}: {cause}",
    "node": "optional call to {peer} failed: {cause}",
    "python": "optional call to {peer} failed: {cause}",
    "csharp": "Optional call to {peer} failed: {cause}",
}

# The handler's own failure, by runtime; stack traces are appended from the source tree.
SERVER_ERRORS: dict[str, dict[int, str]] = {
    "java": {
        sim.EXCEPTION: "{logger}#{line} [{method}][Unexpected exception][{cause}]",
        sim.ERROR_CODE: "{logger}#{line} [{method}][{desc} failed][return status=0, msg={msg}]",
        sim.DISK_FULL: "{logger}#{exit_line} [{method}][write failed] java.io.IOException: No space left on device",
        sim.VALIDATION: "{logger}#{exit_line} [{method}][unexpected response from {peer}: {detail}]",
        sim.DOWNSTREAM: "{logger}#{exit_line} [{method}][{desc} failed: call to {peer} failed]",
    },
    "go": {
        sim.EXCEPTION: "panic recovered: {cause}",
        sim.ERROR_CODE: "[{method}] returning error: rpc error: code = NotFound desc = {msg}",
        sim.DISK_FULL: "[{method}] failed to write: write /var/lib/app/{hex8}.tmp: no space left on device",
        sim.VALIDATION: "[{method}] unexpected response from {peer}: {detail}",
        sim.DOWNSTREAM: "[{method}] failed to complete request: call to {peer} failed",
    },
    "node": {
        sim.EXCEPTION: "{method} failed: {cause}",
        sim.ERROR_CODE: "{method} rejected request: {msg}",
        sim.DISK_FULL: "Error: ENOSPC: no space left on device, write",
        sim.VALIDATION: "{method}: unexpected response from {peer}: {detail}",
        sim.DOWNSTREAM: "{method} failed: upstream {peer} error",
    },
    "python": {
        sim.EXCEPTION: "Exception calling application: {cause}",
        sim.ERROR_CODE: "[{method}] aborting with status NOT_FOUND: {msg}",
        sim.DISK_FULL: "OSError: [Errno 28] No space left on device: '/tmp/{hex8}'",
        sim.VALIDATION: "[{method}] unexpected response from {peer}: {detail}",
        sim.DOWNSTREAM: "[{method}] failed: call to {peer} failed",
    },
    "csharp": {
        sim.EXCEPTION: "Status(StatusCode=\"Unknown\", Detail=\"Exception was thrown by handler. {cause}\")",
        sim.ERROR_CODE: "{method}Async returning error: {msg}",
        sim.DISK_FULL: "System.IO.IOException: No space left on device",
        sim.VALIDATION: "{method}Async: unexpected response from {peer}: {detail}",
        sim.DOWNSTREAM: "{method}Async failed: {peer} failed",
    },
}

WRONG_DETAILS = ("price=0.0 for a paid seat class", "empty result for an existing id", "status=0 msg=null",
                 "negative remaining seats", "total differs from the sum of items", "missing field 'id'")
ERROR_MESSAGES = ("{subject} not found", "no {subject} matches the query", "{subject} is in an invalid state")


# --- background, state and lifecycle lines --------------------------------------------------------

BACKGROUND: dict[str, tuple[tuple[str, str], ...]] = {
    "java": (("DEBUG", "o.s.w.s.DispatcherServlet#1131 Completed 200 OK GET {endpoint}"),
             ("INFO", "c.z.h.HikariPool#421 HikariPool-1 - Pool stats (total=10, active={qty}, idle={qty}, "
                      "waiting=0)"),
             ("INFO", "o.s.s.c.ThreadPoolTaskScheduler#211 Scheduled task refreshCache executed in {ms_small} ms"),
             ("DEBUG", "o.s.c.n.e.s.EurekaServiceRegistry#71 Renewing lease for {service}/{hex8}")),
    "go": (("INFO", "GET {endpoint} 200 {ms_small}ms"),
           ("DEBUG", "profiler: uploaded profile in {ms_small}ms"),
           ("INFO", "grpc health check: SERVING")),
    "node": (("INFO", "health check: serving"),
             ("DEBUG", "event loop utilisation {qty}%")),
    "python": (("INFO", "Health check: SERVING"),
               ("DEBUG", "GC: collected {qty} objects")),
    "csharp": (("INFO", "Checking CartService Health"),
               ("DEBUG", "Redis connection multiplexer status: connected")),
    "mysql": (("INFO", "[Note] [MY-010914] [Server] Aborted connection {num} to db: 'ts' user: 'root' host: "
                       "'{ip}' (Got an error reading communication packets)"),
              ("INFO", "[Note] [MY-013360] [Server] Plugin mysql_native_password reported: "
                       "''mysql_native_password' is deprecated'")),
    "postgres": (("INFO", "checkpoint starting: time"),
                 ("INFO", "checkpoint complete: wrote {qty} buffers (0.0%); write={ms_small}.001 s")),
    "mongodb": (("INFO", '{{"c":"NETWORK","id":22943,"ctx":"listener","msg":"Connection accepted",'
                         '"attr":{{"remote":"{ip}:{port}","connectionCount":{conns}}}}}'),
                ("INFO", '{{"c":"STORAGE","id":22430,"ctx":"Checkpointer","msg":"WiredTiger message",'
                         '"attr":{{"message":"saving checkpoint snapshot min: {num}"}}}}')),
    "redis": (("INFO", "1:M {redis_time} * {keys} changes in 60 seconds. Saving..."),
              ("INFO", "1:M {redis_time} * Background saving started by pid {pid}"),
              ("INFO", "{pid}:C {redis_time} * DB saved on disk")),
}

SLOW_QUERY = {
    "mysql": "[Warning] [MY-010914] slow query: Query_time: {secs} Lock_time: 0.000 Rows_sent: {qty} "
             "Rows_examined: {docs} SET timestamp={epoch}; {statement};",
    "postgres": "duration: {ms} ms  statement: {statement}",
    "mongodb": '{{"c":"COMMAND","id":51803,"ctx":"conn{pid}","msg":"Slow query","attr":{{"type":"command",'
               '"ns":"{namespace}","command":{{"{verb}":"{collection}"}},"planSummary":"COLLSCAN",'
               '"docsExamined":{docs},"durationMillis":{ms_int}}}}}',
    "redis": "1:M {redis_time} # Slow command: {statement} took {us} microseconds",
}
SLOW_QUERY_MS = {"mysql": 200.0, "postgres": 200.0, "mongodb": 100.0, "redis": 10.0}

STARTUP: dict[str, tuple[str, ...]] = {
    "java": ("Starting {app} v{version} using Java 1.8.0_292 on {pod} with PID 1",
             "Tomcat initialized with port(s): {port} (http)",
             "HikariPool-1 - Start completed.",
             "Tomcat started on port(s): {port} (http) with context path ''",
             "Started {app} in {startup} seconds (JVM running for {startup})"),
    "go": ('starting grpc server at :{port}', "profiler enabled", "service config: version={version}"),
    "node": ("Starting {app} v{version}", "{app} gRPC server started on port {port}"),
    "python": ("initializing {app} version {version}", "listening on port: {port}"),
    "csharp": ("Started as process with id 1", "Connecting to Redis: {peer}:6379",
               "Now listening on: http://0.0.0.0:{port}", "Application started."),
    "mysql": ("[System] [MY-010116] [Server] /usr/sbin/mysqld (mysqld 8.0.33) starting as process 1",
              "[System] [MY-010931] [Server] /usr/sbin/mysqld: ready for connections. port: 3306"),
    "postgres": ("database system was interrupted; last known up at {now}",
                 "database system is ready to accept connections"),
    "mongodb": ('{{"c":"CONTROL","id":23285,"msg":"Automatically disabling TLS 1.0"}}',
                '{{"c":"NETWORK","id":23016,"msg":"Waiting for connections","attr":{{"port":27017}}}}'),
    "redis": ("1:C {redis_time} # Redis version=7.0.11, bits=64, pid=1, just started",
              "1:M {redis_time} * Loading RDB produced by version 7.0.11",
              "1:M {redis_time} * DB loaded from disk: {secs} seconds",
              "1:M {redis_time} * Ready to accept connections tcp"),
}

PRESSURE = {
    "memory": {
        "java": ("WARN", "c.z.h.p.HikariPool#797 HikariPool-1 - Thread starvation or clock leap detected "
                         "(housekeeper delta={gc_delta})."),
        "go": ("WARN", "runtime: GC forced; heap in use {heap} MiB approaching limit"),
        "node": ("WARN", "<--- Last few GCs ---> [1:0x{hex8}] Mark-sweep {heap} (xxx) -> {heap} MB, {gcms} ms: "
                         "allocation failure scavenge might not succeed"),
        "python": ("WARN", "worker memory usage {heap} MiB above soft limit"),
        "csharp": ("WARN", "GC heap hard limit approaching: {heap} MiB in use"),
    },
    "cpu": {
        "java": ("WARN", "c.z.h.p.HikariPool#797 HikariPool-1 - Thread starvation or clock leap detected "
                         "(housekeeper delta={gc_delta})."),
        "go": ("WARN", "grpc: server handler took {ms_int}ms to be scheduled"),
        "node": ("WARN", "event loop blocked for {ms_int}ms"),
        "python": ("WARN", "[CRITICAL] WORKER TIMEOUT (pid:{pid})"),
        "csharp": ("WARN", "ThreadPool starvation detected: {qty} work items queued"),
    },
}

TLS_SERVER = "http: TLS handshake error from {ip}:{port}: remote error: tls: bad certificate"
CONFIG_RELOAD = {
    "java": "o.s.c.e.event.RefreshEventListener#73 Refresh keys changed: [{key}]",
    "go": "config reloaded: {key} changed",
    "node": "configuration reloaded ({key})",
    "python": "reloaded settings: {key}",
    "csharp": "Configuration reloaded: {key}",
}
WARN_BURST = (
    "Deprecated API usage: endpoint {endpoint} will be removed in v2",
    "slow consumer detected on topic notifications (lag {qty}00 messages)",
    "Failed to refresh feature flags from config server, using cached values ({ms_int} ms)",
)

STORE_DISK_FULL = {
    "mysql": "[ERROR] [MY-012639] [InnoDB] Write to file ./ts/{table}.ibd failed at offset 0, 16384 bytes should "
             "have been written, only 0 were written. Operating system error number 28: No space left on device",
    "postgres": 'ERROR:  could not extend file "base/16384/{table}": No space left on device',
    "mongodb": '{{"c":"STORAGE","id":22435,"msg":"WiredTiger error","attr":{{"error":28,"message":'
               '"__posix_file_write: /data/db/collection-{table}.wt: write: No space left on device"}}}}',
    "redis": "Write error saving DB on disk: No space left on device",
}
SLOW_IO = {
    "java": "c.z.h.p.HikariPool#797 HikariPool-1 - Thread starvation or clock leap detected "
            "(housekeeper delta={gc_delta}).",
    "go": "slow write to /var/lib/app/cache.db: fsync took {ms_int}ms",
    "node": "slow filesystem write: {ms_int}ms",
    "python": "WARNING slow disk write detected: {ms_int} ms",
    "csharp": "Slow I/O detected: write took {ms_int} ms",
    "mysql": "[Warning] [MY-012924] [InnoDB] A long semaphore wait: --Thread {num} has waited at buf0flu.cc line "
             "1256 for {ms_int} milliseconds",
    "postgres": "checkpoint complete: sync files=12, longest={ms_int} ms",
    "mongodb": '{{"c":"STORAGE","id":22430,"msg":"WiredTiger message","attr":{{"message":"fsync took {ms_int} ms"}}}}',
    "redis": "1:M {redis_time} # Asynchronous AOF fsync is taking too long (disk is busy?). Writing the AOF "
             "buffer without waiting for fsync to complete, this may slow down Redis.",
}
DISK_FULL_STATE = {
    "java": "ch.qos.logback.core.FileAppender - IO failure in appender: java.io.IOException: No space left on device",
    "go": "failed to flush log buffer: write /var/log/app.log: no space left on device",
    "node": "Error: ENOSPC: no space left on device, write '/var/log/app.log'",
    "python": "Logging error: OSError: [Errno 28] No space left on device",
    "csharp": "System.IO.IOException: No space left on device : '/app/logs/cart.log'",
    "mysql": "[ERROR] [MY-000035] [Server] Disk is full writing './binlog.000042' (OS errno 28 - No space left on "
             "device). Waiting for someone to free space...",
    "postgres": "PANIC:  could not write to file \"pg_wal/xlogtemp.{pid}\": No space left on device",
    "mongodb": '{{"c":"CONTROL","id":23081,"msg":"Disk space is low","attr":{{"freeBytes":{bytes}}}}}',
    "redis": "1:M {redis_time} # Background saving error: No space left on device",
}
