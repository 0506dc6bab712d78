"""A Gymnasium environment for root-cause analysis: an agent investigates one incident with tool calls.

Each step the agent makes one tool call, as a dict `{"tool": name, "args": {...}}` or its JSON text
(ThinkFL's `{"name": ..., "arguments": ...}` and `<tool_call>` wrapping are accepted too). The tools
and their observations are `flipmoe.toolkits.explore`'s, the same that `flipmoe rca`'s explorer runs:

- `search_traces(parent_span_id, trace_id=None)`: the child spans of a span in the window;
  `parent_span_id` null or "root" lists the root spans since the alert, failing then slowest first.
- `search_fluctuating_metrics(service, timestamp=alert time)`: the service's series whose level
  from `timestamp` on departs from normal (modified z-score against the baseline, else the minutes
  before `timestamp`), largest change first.
- `search_logs(service, window=incident window, query="")`: matching lines, counted by level and
  grouped by (pod, level, message), those the baseline never logged first.
- `submit(root_causes)` (ThinkFL's `print_results`, the name the tool list shows): a ranked list of
  at least three `{service, pod?, node?}`; ends the episode with the grader's reward
  (`grader.grade_submission`).

A malformed call (unknown tool, bad or missing argument, unknown service or span) returns an error
observation and `-malformed_penalty`; it never raises. Other calls earn 0. The episode is truncated
after `max_steps` calls. Observations are printable-ASCII text (so they lie in a `spaces.Text`);
`info["data"]` carries the same result as plain Python data.

The environment reads the label: it is an evaluation and training component, never the RCA path.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium import spaces

from data_pipeline.chaos.grader import GraderWeights, grade_submission
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import Incident, read_incident
from flipmoe.telemetry.label import Label, load_label
from flipmoe.toolkits.explore import ExploreConfig, ExploreTools, observation_text

_PRINTABLE = frozenset(string.printable)
_TOOL_DEFAULTS = ExploreConfig()


@dataclass(kw_only=True)
class GymConfig:
    """Limits of `RCAEnv`, and the settings of its tools (see `flipmoe.toolkits.explore.ExploreConfig`)."""

    max_steps: int = 20
    """Calls per episode; the episode is truncated after this many."""
    max_rows: int = _TOOL_DEFAULTS.max_rows
    """Rows a tool returns at most (the observation says how many were left out)."""
    max_observation_chars: int = _TOOL_DEFAULTS.max_observation_chars
    """Observations are cut to this length, so one call cannot flood an agent's context."""
    max_action_chars: int = 16_000
    """Longest JSON action accepted."""
    lookback_minutes: float = _TOOL_DEFAULTS.lookback_minutes
    """search_fluctuating_metrics: minutes before the timestamp that stand in for a missing baseline."""
    lookahead_minutes: float = _TOOL_DEFAULTS.lookahead_minutes
    """search_fluctuating_metrics: minutes from the timestamp on whose median is compared with normal."""
    z_threshold: float = _TOOL_DEFAULTS.z_threshold
    """A series fluctuates when its modified z-score reaches this."""
    malformed_penalty: float = 0.05
    """Reward subtracted for a malformed call."""
    grader: GraderWeights | None = None
    """Weights of the submission grader; None means the grader's defaults."""

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise FlipmoeInputError("gym max_steps must be >= 1")
        if self.max_action_chars < 200:
            raise FlipmoeInputError("gym max_action_chars must be >= 200")
        if self.malformed_penalty < 0:
            raise FlipmoeInputError("gym malformed_penalty must be >= 0")
        self.tool_config()  # validates the tool settings

    def tool_config(self) -> ExploreConfig:
        """The tools' settings; a submission needs as many entries as the grader's `min_entries`."""
        return ExploreConfig(max_rows=self.max_rows, max_observation_chars=self.max_observation_chars,
                             lookback_minutes=self.lookback_minutes, lookahead_minutes=self.lookahead_minutes,
                             z_threshold=self.z_threshold,
                             min_root_causes=(self.grader or GraderWeights()).min_entries)


class RCAEnv(gym.Env[str, str]):
    """One incident as an episode: observe the alert, call tools, submit ranked root causes."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, incident: Incident, label: Label, *, config: GymConfig | None = None) -> None:
        self.incident = incident
        self.label = label
        self.config = config or GymConfig()
        self.observation_space = spaces.Text(self.config.max_observation_chars, charset=_PRINTABLE)
        self.action_space = spaces.Text(self.config.max_action_chars, charset=_PRINTABLE)
        self.tools = ExploreTools(incident, config=self.config.tool_config())
        self._steps = self._malformed = 0
        self._terminated = self._truncated = False

    @classmethod
    def from_dir(cls, path: str | Path, *, config: GymConfig | None = None) -> RCAEnv:
        """An environment over an incident directory; it must hold a `label.json`."""
        label = load_label(path)
        if label is None:
            raise FlipmoeInputError("no label.json: the gym needs the ground truth to grade", path=path,
                                    hint="import or generate the incident with its label")
        return cls(read_incident(path), label, config=config)

    @classmethod
    def from_chaos(cls, system: str, seed: int, fault: str | None = None, *,
                   config: GymConfig | None = None) -> RCAEnv:
        """An environment over a freshly simulated chaos-gym incident."""
        from data_pipeline.chaos.generate import generate_incident  # the simulator is heavy: import on use

        incident, label = generate_incident(system, fault, seed=seed)
        return cls(incident, label, config=config)

    # --- the Gymnasium contract -------------------------------------------------------------------

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self._steps = self._malformed = 0
        self._terminated = self._truncated = False
        briefing = self.tools.briefing(max_steps=self.config.max_steps)
        info = {"step": 0, "tool": None, "ok": True, "error": None, "data": briefing.data}
        return briefing.text, info

    def step(self, action: str | Mapping[str, Any]) -> tuple[str, float, bool, bool, dict[str, Any]]:
        info: dict[str, Any] = {"step": self._steps, "tool": None, "ok": False, "error": None, "data": None}
        if self._terminated or self._truncated:
            info["error"] = "the episode is over; call reset()"
            return self._observe(f"error: {info['error']}"), 0.0, self._terminated, self._truncated, info
        self._steps += 1
        info["step"] = self._steps
        observation = self.tools.call_action(action, max_chars=self.config.max_action_chars)
        info["tool"], info["ok"], info["error"] = observation.tool, observation.ok, observation.error
        text, info["data"], reward = observation.text, observation.data, 0.0
        if not observation.ok:
            self._malformed += 1
            reward = -self.config.malformed_penalty
        elif observation.tool == "print_results":
            reward, info["grade"] = grade_submission(
                observation.data["root_causes"], self.label, steps=self._steps, max_steps=self.config.max_steps,
                malformed_calls=self._malformed, weights=self.config.grader)
            text, info["data"] = _grade_text(info["grade"]), info["grade"]
            self._terminated = True
        if not self._terminated and self._steps >= self.config.max_steps:
            self._truncated = True
            text += f"\n(step budget of {self.config.max_steps} used up: episode truncated)"
        return self._observe(text), float(reward), self._terminated, self._truncated, info

    def _observe(self, text: str) -> str:
        """Printable ASCII, cut to the observation space's length."""
        return observation_text(text, max_chars=self.config.max_observation_chars)


def _grade_text(grade: dict[str, Any]) -> str:
    ranks = ", ".join(f"{level} rank {grade[f'{level}_rank'] or '-'}" for level in ("service", "pod", "node")
                      if grade[level] is not None)
    return (f"submitted. reward {grade['total']:.3f} (correctness {grade['correctness']:.2f}, "
            f"format {grade['format']:.2f}, efficiency {grade['efficiency']:.2f}; {ranks})")
