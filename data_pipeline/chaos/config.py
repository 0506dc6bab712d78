"""Settings of the chaos-gym simulator: how much it samples, how noisy it is, how it lays out a window."""

from __future__ import annotations

from dataclasses import dataclass

from flipmoe.errors import FlipmoeInputError

METRIC_SCHEMES = ("prometheus", "human", "nezha")


@dataclass(kw_only=True)
class ChaosConfig:
    """Simulation fidelity and incident layout; every field has a default that fits a 30-minute window."""

    samples_per_minute: int = 120
    """Requests simulated individually per minute (a statistical sample of the real load, which only
    sets weights); more samples give smoother latency percentiles and cost proportionally more time."""
    trace_sample_rate: float | None = None
    """Fraction of real requests whose spans are kept; None uses the system's own rate."""
    log_sample_rate: float | None = None
    """Fraction of simulated requests whose request-scoped log lines are kept (all levels alike); None uses
    the system's own rate (0.5, and every request for `ticketing`, as the TrainTicket deployment logs)."""
    metric_step_seconds: float | None = None
    """Metric sample interval in seconds; None uses the system's own interval (15, 30 or 60 s)."""
    metric_scheme: str | None = None
    """Metric naming scheme ('prometheus', 'human' or 'nezha'); None uses the system's own scheme."""
    baseline_minutes: float | None = None
    """Length of the fault-free baseline window just before the incident window; None means the
    same length as the incident window."""
    fault_offset: tuple[float, float] = (0.2, 0.55)
    """The fault starts at a random fraction of the incident window drawn from this range."""
    red_herrings: int = 2
    """At most this many benign distractors (an innocent deploy, a config change, a CPU spike,
    scaling, a noisy log burst) are placed around the fault; 0 disables them."""
    release_train: int = 0
    """Innocent deploys of this many other services within about a minute of the fault's onset: a release
    that ships several services at once (new pods without history), only one change being faulty when the
    fault is a deploy; 0 disables them."""
    release_spread_s: float = 60.0
    """The release train's innocent deploys land between this many seconds before the fault's onset and 30 s
    after it: 60 is a release shipped at once, a longer spread mixes in the earlier changes of the day."""
    noise: float = 0.04
    """Relative standard deviation of the multiplicative noise on metric samples."""
    load_probes: int = 2
    """Cheap simulation passes (a quarter of the samples) that estimate load before the full pass,
    so saturation and retry amplification feed back into latency."""
    include_code: bool = True
    """Carry the synthetic source tree (code/ in the incident directory)."""

    def __post_init__(self) -> None:
        _require(self.samples_per_minute >= 8, "chaos.samples_per_minute must be at least 8")
        if self.trace_sample_rate is not None:
            _require(0 < self.trace_sample_rate <= 1, "chaos.trace_sample_rate must be in (0, 1]")
        if self.log_sample_rate is not None:
            _require(0 < self.log_sample_rate <= 1, "chaos.log_sample_rate must be in (0, 1]")
        if self.metric_step_seconds is not None:
            _require(5 <= self.metric_step_seconds <= 300, "chaos.metric_step_seconds must be in [5, 300]")
        if self.metric_scheme is not None:
            _require(self.metric_scheme in METRIC_SCHEMES,
                     f"chaos.metric_scheme {self.metric_scheme!r} is unknown; valid: {', '.join(METRIC_SCHEMES)}")
        if self.baseline_minutes is not None:
            _require(self.baseline_minutes >= 1, "chaos.baseline_minutes must be at least 1")
        lo, hi = self.fault_offset
        _require(0 < lo <= hi < 0.9, "chaos.fault_offset must be (lo, hi) with 0 < lo <= hi < 0.9")
        _require(0 <= self.red_herrings <= 5, "chaos.red_herrings must be in [0, 5]")
        _require(0 <= self.release_train <= 8, "chaos.release_train must be in [0, 8]")
        _require(30 <= self.release_spread_s <= 3600, "chaos.release_spread_s must be in [30, 3600]")
        _require(0 <= self.noise <= 0.5, "chaos.noise must be in [0, 0.5]")
        _require(0 <= self.load_probes <= 4, "chaos.load_probes must be in [0, 4]")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise FlipmoeInputError(message)
