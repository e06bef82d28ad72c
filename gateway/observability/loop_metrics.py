"""Counters and histograms for the request path: plain attribute updates, no lock.

prometheus-client guards every `inc()` and `observe()` with a lock (and a histogram takes two).
The families here are updated only on the event loop's thread, the one thread that serves
requests, and read on it when scraped, so they need none: an increment is one attribute update,
an observation one bisect. Each family is a prometheus-client `Counter` or `Histogram` (declared,
validated and registered as one) whose labelled series are these plain objects; its exposition,
built at scrape time, is exactly the stock one (names, help, labels, bucket bounds, values and
the `_created` series).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString


def _created_series() -> bool:
    """prometheus-client's own switch (`PROMETHEUS_DISABLE_CREATED_SERIES`,
    `disable_created_metrics()`), read at scrape time as its metrics do."""
    return bool(getattr(prometheus_metrics, "_use_created", True))


class CounterChild:
    """One labelled series of a `LoopCounter`."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class HistogramChild:
    """One labelled series of a `LoopHistogram`: a count per bucket (not cumulative) and the
    sum of observations."""

    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        if amount == amount:  # NaN falls in no bucket, as with prometheus-client
            self.counts[bisect_left(self._bounds, amount)] += 1


Child = TypeVar("Child")


def _label_key(names: tuple[str, ...], values: tuple[object, ...]) -> tuple[str, ...]:
    if len(values) != len(names):
        raise ValueError(f"expected labels {names}, got {values}")
    return tuple(str(value) for value in values)


class _LoopSeries(Generic[Child]):
    """The labelled series of a loop family, kept in a plain dict: what `LoopCounter` and
    `LoopHistogram` put in place of prometheus-client's locked children."""

    _labelnames: tuple[str, ...]
    _children: dict[tuple[str, ...], Child]

    def _new_child(self) -> Child:
        raise NotImplementedError

    def labels(self, *values: object) -> Child:
        key = _label_key(self._labelnames, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def remove(self, *values: object) -> None:
        del self._children[_label_key(self._labelnames, values)]

    def clear(self) -> None:
        self._children.clear()


class LoopCounter(_LoopSeries[CounterChild], Counter):  # type: ignore[misc]
    """A labelled `Counter` whose series are `CounterChild`s. It is a `Counter` for everything
    but `labels`, `remove`, `clear` and `collect` (declaration, validation, registration)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry,
    ) -> None:
        if not labelnames:
            raise ValueError(f"{name}: a loop metric family needs labels")
        self._children: dict[tuple[str, ...], CounterChild] = {}
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        created = _created_series()
        for key, child in list(self._children.items()):
            family.add_metric(key, child.value, created=child.created if created else None)
        return [family]


class LoopHistogram(_LoopSeries[HistogramChild], Histogram):  # type: ignore[misc]
    """A labelled `Histogram` whose series are `HistogramChild`s. It is a `Histogram` for
    everything but `labels`, `remove`, `clear` and `collect`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        if not labelnames:
            raise ValueError(f"{name}: a loop metric family needs labels")
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        super().__init__(name, documentation, labelnames, buckets=buckets, registry=registry)
        bounds = [float(bound) for bound in buckets]
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._bounds = tuple(bounds)
        # The `le` label as prometheus-client spells it ("1.0", "+Inf"); untyped upstream.
        self._le = tuple(floatToGoString(bound) for bound in bounds)  # type: ignore[no-untyped-call]

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self._bounds)

    def collect(self) -> list[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        created = _created_series()
        for key, child in list(self._children.items()):
            cumulative, buckets = 0.0, []
            for le, count in zip(self._le, child.counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(key, buckets, child.sum)
            if created:
                labels = dict(zip(self._labelnames, key, strict=True))
                family.add_sample(f"{self._name}_created", labels, child.created)
        return [family]
