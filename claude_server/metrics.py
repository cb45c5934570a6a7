"""Prometheus metrics, in a registry of the app's own (so that several apps in one process,
as in the tests, never share counters)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from claude_server.outcome import TurnResult

# Claude Code turns take seconds to many minutes.
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
FIRST_EVENT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
QUEUE_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.turns_started = Counter("claude_server_turns_started", "Turns whose CLI was started", registry=r)
        self.turns_finished = Counter(
            "claude_server_turns_finished", "Turns that ended, by status", ["status"], registry=r
        )
        self.turn_duration = Histogram(
            "claude_server_turn_duration_seconds", "From CLI start to its end", buckets=DURATION_BUCKETS, registry=r
        )
        self.first_event = Histogram(
            "claude_server_time_to_first_event_seconds",
            "From CLI start to its first line",
            buckets=FIRST_EVENT_BUCKETS,
            registry=r,
        )
        self.queue_length = Gauge("claude_server_queue_length", "Turns waiting for a slot", registry=r)
        self.queue_wait = Histogram(
            "claude_server_queue_wait_seconds", "Time turns waited for a slot", buckets=QUEUE_BUCKETS, registry=r
        )
        self.running = Gauge("claude_server_running_clis", "CLI processes running", registry=r)
        self.cost = Counter("claude_server_cost_usd", "Cost reported by the CLI, by model", ["model"], registry=r)
        self.tokens = Counter(
            "claude_server_tokens", "Tokens reported by the CLI, by model and kind", ["model", "kind"], registry=r
        )

    def turn_ended(self, status: str, model: str | None, result: TurnResult | None) -> None:
        """Count a finished turn, with its own cost (not the session's running total)."""
        self.turns_finished.labels(status=status).inc()
        if result is None:
            return
        label = model or "unknown"
        if result.cost_usd is not None and result.cost_usd > 0:
            self.cost.labels(model=label).inc(result.cost_usd)
        for kind in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            value = result.tokens(kind)
            if value:
                self.tokens.labels(model=label, kind=kind.removesuffix("_tokens")).inc(value)

    def watch_pool(self, stats: Callable[[], dict[str, Any]]) -> None:
        """Export the warm pool's figures (``WarmPool.public``) as they are at each scrape."""
        self.registry.register(_PoolCollector(stats))

    def watch_tasks(self, stats: Callable[[], dict[str, int]]) -> None:
        """Export the background tasks queued and running, as they are at each scrape."""
        self.registry.register(_TasksCollector(stats))

    def watch_providers(self, public: Callable[[], list[dict[str, Any]]]) -> None:
        """Export each provider's health, turns and failures (``Providers.public``)."""
        self.registry.register(_ProvidersCollector(public))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield GaugeMetricFamily("claude_server_warm_clis", "Idle warm CLI processes", value=stats["size"])
        for name, text in (
            ("hits", "Turns that found their session's warm CLI"),
            ("misses", "Turns on a known session that started a new CLI"),
            ("evictions", "Warm CLIs ended because the pool was full"),
            ("expired", "Warm CLIs ended after the idle timeout"),
        ):
            yield CounterMetricFamily(f"claude_server_warm_{name}", text, value=stats[name])


class _TasksCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield GaugeMetricFamily("claude_server_tasks_queued", "Background tasks waiting", value=stats["queued"])
        yield GaugeMetricFamily("claude_server_tasks_running", "Background tasks running", value=stats["running"])


class _ProvidersCollector(Collector):
    def __init__(self, public: Callable[[], list[dict[str, Any]]]) -> None:
        self._public = public

    def collect(self) -> Iterator[Metric]:
        providers = self._public()
        healthy = GaugeMetricFamily(
            "claude_server_provider_healthy", "1 while a provider takes turns", labels=["provider"]
        )
        turns = CounterMetricFamily(
            "claude_server_provider_turns", "Turns that succeeded per provider", labels=["provider"]
        )
        failures = CounterMetricFamily(
            "claude_server_provider_failures", "API failures counted per provider", labels=["provider"]
        )
        for p in providers:
            healthy.add_metric([p["id"]], 1.0 if p["state"] in ("healthy", "half_open") else 0.0)
            turns.add_metric([p["id"]], p["turns_total"])
            failures.add_metric([p["id"]], p["failures_total"])
        yield healthy
        yield turns
        yield failures
