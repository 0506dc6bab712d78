"""Metric naming schemes: one canonical quantity, three spellings, so analyses cannot overfit to one.

Each quantity is computed in base units (cores, bytes, seconds, ratios, per-second rates) and
written under the system's scheme with the scheme's unit:
- `prometheus`: cAdvisor / kube-state-metrics / client-library names as recording rules would
  store them (`container_cpu_usage_seconds_total:rate1m`, `http_server_request_duration_seconds:p95`).
- `human`: dashboard names with units (`cpu_usage_percent`, `latency_p95_ms`).
- `nezha`: the CamelCase-with-unit names of the Nezha TrainTicket data set (`CpuUsageRate(%)`).
Percent-of-limit quantities are divided by the pod's CPU or memory limit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Spelling:
    name: str
    scale: float = 1.0
    per_limit: str | None = None
    """'cpu' or 'memory': divide by the pod's limit before scaling (a percent of the limit)."""
    complement: bool = False
    """Write 1 - value (a success rate instead of an error ratio)."""


def _s(name: str, scale: float = 1.0, per_limit: str | None = None, complement: bool = False) -> Spelling:
    return Spelling(name, scale, per_limit, complement)


# quantity -> (prometheus, human, nezha)
_TABLE: dict[str, tuple[Spelling, Spelling, Spelling]] = {
    "cpu": (_s("container_cpu_usage_seconds_total:rate1m"), _s("cpu_usage_percent", 100, "cpu"),
            _s("CpuUsageRate(%)", 100, "cpu")),
    "cpu_pressure": (_s("container_pressure_cpu_waiting_seconds_total:rate1m"), _s("cpu_pressure_percent", 100),
                     _s("CpuPressure(%)", 100)),
    "cpu_throttle": (_s("container_cpu_cfs_throttled_periods:ratio_rate1m"), _s("cpu_throttled_percent", 100),
                     _s("CpuThrottledRate(%)", 100)),
    "mem": (_s("container_memory_working_set_bytes", 2**20), _s("memory_usage_mb"), _s("MemoryUsage(Mi)")),
    "mem_ratio": (_s("container_memory_working_set_bytes:ratio_limit", 1, "memory"),
                  _s("memory_usage_percent", 100, "memory"), _s("MemoryUsageRate(%)", 100, "memory")),
    "net_rx": (_s("container_network_receive_bytes_total:rate1m"), _s("network_in_kb_per_s", 1 / 1024),
               _s("NetworkReceiveBytes")),
    "net_tx": (_s("container_network_transmit_bytes_total:rate1m"), _s("network_out_kb_per_s", 1 / 1024),
               _s("NetworkTransmitBytes")),
    "net_drop": (_s("container_network_transmit_packets_dropped_total:rate1m"), _s("packets_dropped_per_s"),
                 _s("NetworkDropPackets")),
    "net_rtt_p90": (_s("pod_network_rtt_seconds:p90"), _s("network_rtt_p90_ms", 1000), _s("NetworkP90(ms)", 1000)),
    "disk_write": (_s("container_fs_writes_bytes_total:rate1m"), _s("disk_write_kb_per_s", 1 / 1024),
                   _s("DiskWriteBytes")),
    "disk_io": (_s("container_fs_io_time_seconds_total:rate1m"), _s("disk_io_busy_percent", 100),
                _s("DiskIOBusy(%)", 100)),
    "fs_usage": (_s("kubelet_volume_stats_used_bytes:ratio"), _s("disk_usage_percent", 100),
                 _s("DiskUsageRate(%)", 100)),
    "syscall_read": (_s("process_syscalls_read_total:rate1m"), _s("read_syscalls_per_s"), _s("SyscallRead")),
    "syscall_write": (_s("process_syscalls_write_total:rate1m"), _s("write_syscalls_per_s"), _s("SyscallWrite")),
    "restarts": (_s("kube_pod_container_status_restarts_total"), _s("restart_count"), _s("RestartCount")),
    "req_rate": (_s("http_server_requests_seconds_count:rate1m"), _s("requests_per_second"),
                 _s("PodWorkload(Ops)")),
    "err_ratio": (_s("http_server_requests_errors:ratio_rate1m"), _s("error_rate_percent", 100),
                  _s("PodSuccessRate(%)", 100, complement=True)),
    "lat_p50": (_s("http_server_request_duration_seconds:p50"), _s("latency_p50_ms", 1000),
                _s("PodServerLatencyP50(s)")),
    "lat_p95": (_s("http_server_request_duration_seconds:p95"), _s("latency_p95_ms", 1000),
                _s("PodServerLatencyP95(s)")),
    "lat_p99": (_s("http_server_request_duration_seconds:p99"), _s("latency_p99_ms", 1000),
                _s("PodServerLatencyP99(s)")),
    "client_lat_p95": (_s("http_client_request_duration_seconds:p95"), _s("downstream_latency_p95_ms", 1000),
                       _s("PodClientLatencyP95(s)")),
    "gc_time": (_s("runtime_gc_pause_seconds:rate1m"), _s("gc_time_percent", 100), _s("GcTimeRate(%)", 100)),
    "threads_busy": (_s("executor_threads_busy:ratio"), _s("busy_threads_percent", 100),
                     _s("ThreadPoolUsage(%)", 100)),
    "goroutines": (_s("go_goroutines"), _s("goroutines"), _s("Goroutines")),
    "event_loop_lag": (_s("nodejs_eventloop_lag_seconds"), _s("event_loop_lag_ms", 1000), _s("EventLoopLag(ms)", 1000)),
    "workers_busy": (_s("gunicorn_workers_busy:ratio"), _s("busy_workers_percent", 100), _s("WorkerUsage(%)", 100)),
    "db_connections": (_s("db_connections_active"), _s("db_connections"), _s("DbConnections")),
    "slow_queries": (_s("db_slow_queries_total:rate1m"), _s("slow_queries_per_s"), _s("SlowQueries(Ops)")),
    "cache_hit": (_s("redis_keyspace_hits:ratio_rate1m"), _s("cache_hit_percent", 100), _s("CacheHitRate(%)", 100)),
    "evictions": (_s("redis_evicted_keys_total:rate1m"), _s("evictions_per_s"), _s("Evictions(Ops)")),
    "node_cpu": (_s("instance:node_cpu_utilisation:rate1m"), _s("node_cpu_percent", 100),
                 _s("NodeCpuUsageRate(%)", 100)),
    "node_mem": (_s("instance:node_memory_utilisation:ratio"), _s("node_memory_percent", 100),
                 _s("NodeMemoryUsageRate(%)", 100)),
    "node_net_rx": (_s("instance:node_network_receive_bytes_excluding_lo:rate1m"), _s("node_network_in_kb_per_s",
                                                                                      1 / 1024),
                    _s("NodeNetworkReceiveBytes")),
    "node_disk_io": (_s("instance_device:node_disk_io_time_seconds:rate1m"), _s("node_disk_busy_percent", 100),
                     _s("NodeDiskIOBusy(%)", 100)),
}
_SCHEME_INDEX = {"prometheus": 0, "human": 1, "nezha": 2}
QUANTITIES = tuple(_TABLE)


def spelling(scheme: str, quantity: str) -> Spelling:
    return _TABLE[quantity][_SCHEME_INDEX[scheme]]


def metric_name(scheme: str, quantity: str) -> str:
    return spelling(scheme, quantity).name
