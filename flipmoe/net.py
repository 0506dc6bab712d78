"""HTTP calls to the services flipmoe talks to: telemetry backends (Prometheus, Loki) and delivery webhooks.

One policy for all of them. A request that may not have reached the service (connection refused or reset,
a proxy's 502/503/504, a 429) is tried again after a pause that doubles each time; a read timeout is not
(the service was busy with the request and would be as slow again, or a webhook may have gone through).
What finally fails is a `ServiceError` naming the service, so the user reads "cannot reach Loki at
http://loki:3100" rather than a traceback.

httpx logs every request's full URL at INFO, and some webhook URLs are secrets (Slack's carry their token):
`hide_in_logs` masks such values in what httpx logs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from flipmoe.errors import FlipmoeInputError

__all__ = ["RETRY_STATUS", "RetryPolicy", "ServiceError", "hide_in_logs", "send"]

# Failures where the service never evaluated the request, so asking again can succeed.
TRANSIENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.WriteError,
                    httpx.RemoteProtocolError)
RETRY_STATUS = frozenset({429, 502, 503, 504})
"""Answers that say "not now" (rate limits, a proxy or a server that is not ready): retried by default."""
_MAX_RETRY_AFTER_S = 30.0


class ServiceError(FlipmoeInputError):
    """A service flipmoe depends on is down, too slow, or refused the request; `service` names it."""

    def __init__(self, service: str, problem: str, *, hint: str | None = None) -> None:
        self.service = service
        super().__init__(problem, hint=hint)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently a request is tried again."""

    retries: int = 2
    """Extra attempts after the first."""
    backoff_s: float = 0.25
    """Pause before the first retry; doubled before each further one (a 429's Retry-After, up to 30 s, wins)."""
    timeout_s: float = 30.0
    """Timeout of one attempt (for the message: the HTTP client enforces it)."""


def send(request: Callable[[], httpx.Response], *, service: str, what: str, policy: RetryPolicy,
         hint: str | None = None, timeout_hint: str | None = None,
         retry_if: Callable[[httpx.Response], bool] | None = None) -> httpx.Response:
    """Call `request` (one HTTP request to `service`) until it gives an answer worth returning.

    `service` names the service in errors ("Loki at http://loki:3100"); `what` the request ("query '{a=\"b\"}'").
    An answer for which `retry_if` holds (default: its status is in `RETRY_STATUS`) is retried; once the
    attempts are used up, the last failure is raised as a `ServiceError`. Any other answer, error statuses
    included, is returned for the caller to judge.
    """
    retry_if = retry_if or (lambda response: response.status_code in RETRY_STATUS)
    failure, pause, asked = "", policy.backoff_s, 0.0
    for attempt in range(policy.retries + 1):
        if attempt:
            # A server's Retry-After (capped) replaces our pause once; our own backoff keeps doubling.
            time.sleep(max(pause, asked))
            pause, asked = pause * 2, 0.0
        try:
            response = request()
        except TRANSIENT_ERRORS as err:
            failure = f"cannot reach {service} ({err or type(err).__name__})"
            continue
        except httpx.TimeoutException:
            raise ServiceError(service, f"{service} did not answer {what} within {policy.timeout_s} s",
                               hint=timeout_hint or hint) from None
        except (httpx.HTTPError, httpx.InvalidURL) as err:
            raise ServiceError(service, f"request to {service} failed ({err})", hint=hint) from None
        if retry_if(response):
            failure = f"{service} answered HTTP {response.status_code}"
            asked = _retry_after(response)
            continue
        return response
    raise ServiceError(service, f"{failure}; gave up after {policy.retries + 1} attempt(s)", hint=hint)


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER_S)
    except ValueError:  # absent, or an HTTP date: keep our own backoff
        return 0.0


class _Redactor(logging.Filter):
    """Masks registered secrets in the records of the logger it is attached to."""

    def __init__(self) -> None:
        super().__init__()
        # Replaced, never changed in place: a record logged by another thread reads one consistent set.
        self.secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        with self._lock:
            self.secrets = self.secrets | {secret}

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if secrets:
            text = record.getMessage()
            masked = text
            for secret in secrets:
                masked = masked.replace(secret, "***")
            if masked != text:
                record.msg, record.args = masked, ()
        return True


_REDACTOR = _Redactor()
# The loggers of the HTTP stack that write URLs (httpx at INFO; httpcore writes hosts, never paths or bodies).
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_REDACTOR)


def hide_in_logs(secret: str) -> None:
    """Mask `secret` (a token, a webhook URL) as *** wherever the HTTP client logs it."""
    if len(secret) >= 4:  # masking a tiny string would mangle unrelated log text
        _REDACTOR.add(secret)
