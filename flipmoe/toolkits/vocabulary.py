"""What telemetry names and messages mean, in words every system uses.

Analyses must work on systems nobody here has seen, so they cannot key on one data set's metric
names. Instead, a metric name is read for the resource or golden signal it measures (CPU, memory,
latency, errors, ...) and a log line or event for the failure it reports (out of memory, refused
connection, DNS, TLS, ...). The keyword lists are the vocabulary of Kubernetes, cAdvisor,
node-exporter, OpenTelemetry semantic conventions and common runtimes (JVM, Go, Python, Node).
"""

from __future__ import annotations

import re
from functools import lru_cache

# Ordered: the first category whose pattern matches wins ("cpu_throttled" is cpu, "node_memory" memory).
_METRIC_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("restarts", r"restart|oom ?kill|crash"),
    ("errors", r"error|fail|5xx|4xx|exception|success|status ?code|fault|\bcode [45]\d\d\b"),
    ("latency", r"latenc|duration|response ?time|\brt\b|p9[059]|p50|elapsed|delay|wait ?time|seconds (sum|bucket)"),
    ("cpu", r"cpu|throttl|load ?avg|processor"),
    ("memory", r"mem|heap|rss|oom|swap|working ?set|\bgc\b|garbage"),
    ("disk", r"disk|\bio\b|iops|\bfs\b|filesystem|inode|volume|read ?bytes|write ?bytes"),
    ("network", r"net|tcp|udp|packet|transmit|receive|\brx\b|\btx\b|bandwidth|retrans|socket|dns"),
    ("saturation", r"thread|pool|queue|connection|\bconn\b|backlog|saturat|goroutine|\bfds?\b|file ?desc"
                   r"|active|pending"),
    ("traffic", r"request|qps|rps|throughput|workload|\bops\b|calls|traffic|rate|syscall"),
)
# read/write system calls count socket I/O as much as file I/O; in a service they follow its requests, so
# they are traffic (on the real TrainTicket day, reading them as disk made code faults look like disk faults).
_COMPILED = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in _METRIC_CATEGORIES)

# Signals that also show at the callers of a broken service: they are symptoms, not causes, there.
SYMPTOM_CATEGORIES = frozenset({"latency", "errors", "traffic"})


def _words(name: str) -> str:
    """'PodClientLatencyP90(s)' -> 'pod client latency p90 s'; 'jvm_gc_pause' -> 'jvm gc pause'."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return re.sub(r"[^A-Za-z0-9]+", " ", spaced).lower().strip()


@lru_cache(maxsize=65536)
def metric_category(name: str) -> str:
    """The resource or golden signal a metric measures, or 'other'."""
    words = _words(name)
    for category, pattern in _COMPILED:
        if pattern.search(words):
            return category
    return "other"


# Failure classes read from log messages and event reasons/messages.
_TEXT_CLASSES: tuple[tuple[str, str], ...] = (
    ("oom", r"out ?of ?memory|outofmemory|oom|memory limit|cannot allocate|heap space"),
    ("crash", r"crashloop|back-?off restarting|exited with|segfault|panic|fatal error|sigsegv|core dumped"),
    ("disk", r"no space left|disk (is )?full|quota exceeded|i/o error|read-only file ?system|ioexception.*disk|"
             r"fsync|disk pressure"),
    ("dns", r"no such host|name resolution|unknownhost|could not resolve|nxdomain|dns|getaddrinfo|"
            r"temporary failure in name"),
    ("tls", r"certificate|x509|ssl|tls|handshake|expired cert"),
    ("connection", r"connection refused|connection reset|econnrefused|econnreset|broken pipe|unreachable|"
                   r"no route to host|connect failed|failed to connect"),
    ("timeout", r"timed? ?out|timeout|deadline exceeded|took too long"),
    ("pool", r"pool exhausted|too many connections|connection pool|cannot get a connection|max ?connections|"
             r"hikari|acquire.*connection"),
    ("slow_query", r"slow query|query took|long running query|lock wait|deadlock"),
    ("cache", r"cache|redis|memcache"),
    ("config", r"config|environment variable|env var|invalid value|missing (key|property|setting)|"
               r"bad port|invalid port|misconfigur"),
    ("retry", r"retry|retrying|attempt \d+|backoff"),
    ("exception", r"exception|traceback|stack ?trace|\berror\b.*\bat\b|nullpointer|keyerror|typeerror|"
                  r"valueerror|indexoutofbounds|illegalstate|unhandled"),
    ("wrong_result", r"unexpected (result|response|value)|mismatch|invalid (result|response)|"
                     r"assertion|wrong|inconsistent|status[=: ]+(4\d\d|5\d\d)|returned (4\d\d|5\d\d)"),
    ("probe", r"unhealthy|readiness|liveness|probe failed"),
    ("node", r"nodenotready|node (is )?not ready|kubelet stopped|node lost|evict"),
    ("deploy", r"deploy|rollout|scaled|image|version|release"),
)
_TEXT_COMPILED = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in _TEXT_CLASSES)
TEXT_CLASSES = tuple(name for name, _ in _TEXT_CLASSES)


@lru_cache(maxsize=65536)
def text_classes(text: str) -> frozenset[str]:
    """Every failure class a log line or event text mentions."""
    return frozenset(name for name, pattern in _TEXT_COMPILED if pattern.search(text))
