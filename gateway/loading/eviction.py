"""Which loaded models to unload when memory runs short: pure policies, no I/O, no asyncio.

The loader tells a policy what happened (load, hit, evict) and asks it for victims; the
simulator (``mme-gateway simulate``) drives the very same objects over request traces.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain
from typing import Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Resident:
    name: str
    size: int
    """Bytes it holds in memory."""
    load_cost: float
    """Seconds its load took (or an estimate)."""
    pinned: bool
    """Requests in flight or a load in progress: never evicted."""


class EvictionPolicy(Protocol):
    name: str

    def record_load(self, name: str, size: int, load_cost: float) -> None:
        """The model became resident."""

    def record_hit(self, name: str) -> None:
        """A request used a resident model. O(1): it is on the hot path."""

    def record_hits(self, name: str, count: int) -> None:
        """``count`` requests in a row used a resident model (the data planes' reports): as
        ``count`` calls of ``record_hit``, in O(1) or O(visits)."""

    def record_evict(self, name: str) -> None:
        """The model left memory."""

    def choose_victims(self, residents: Sequence[Resident], bytes_needed: int) -> list[str]:
        """Names to unload, in order: unpinned only, stopping once their sizes reach
        ``bytes_needed``; every unpinned one if even that is not enough (the caller decides)."""


def take_until(candidates: Iterable[Resident], bytes_needed: int) -> list[str]:
    """The unpinned candidates, in the given order, until their sizes add up to ``bytes_needed``."""
    victims: list[str] = []
    freed = 0
    for resident in candidates:
        if freed >= bytes_needed:
            break
        if resident.pinned:
            continue
        victims.append(resident.name)
        freed += resident.size
    return victims


def remember(past: OrderedDict[str, T], name: str, value: T, limit: int) -> None:
    """Keep an evicted model's record for its return, the ``limit`` most recent at most."""
    past[name] = value
    if len(past) > limit:
        past.popitem(last=False)


class LRUPolicy:
    """Least recently loaded or hit first."""

    name = "lru"

    def __init__(self) -> None:
        self._order: OrderedDict[str, None] = OrderedDict()

    def record_load(self, name: str, size: int, load_cost: float) -> None:
        self._order[name] = None
        self._order.move_to_end(name)

    def record_hit(self, name: str) -> None:
        if name in self._order:
            self._order.move_to_end(name)

    def record_hits(self, name: str, count: int) -> None:
        if count > 0:
            self.record_hit(name)

    def record_evict(self, name: str) -> None:
        self._order.pop(name, None)

    def choose_victims(self, residents: Sequence[Resident], bytes_needed: int) -> list[str]:
        if bytes_needed <= 0:
            return []
        by_name = {r.name: r for r in residents}
        # Residents the policy never saw loaded have no recency: they go first.
        unknown = (r for r in residents if r.name not in self._order)
        known = (by_name[n] for n in self._order if n in by_name)
        return take_until(chain(unknown, known), bytes_needed)


@dataclass(slots=True)
class _Entry:
    size: int
    cost: float
    freq: int
    priority: float
    touched: int
    """Tie-break between equal priorities: least recently touched goes first."""


class GDSFPolicy:
    """GreedyDual-Size-Frequency (Cherkasova 1998): evict the lowest
    ``H = L + freq * cost / size``, where ``L`` (the clock) is the H of the last evicted model.

    Small models that are expensive to load and often used stay; big cheap ones go first.
    The clock rises with each eviction, so a model that stops being used is eventually
    overtaken by newcomers. Frequencies outlive evictions (up to ``history`` models, oldest
    dropped first) so a model that comes back keeps its record.
    """

    name = "gdsf"

    def __init__(self, history: int = 100_000) -> None:
        self._entries: dict[str, _Entry] = {}
        self._past_freq: OrderedDict[str, int] = OrderedDict()
        self._history = history
        self._clock = 0.0
        self._ticks = 0

    def record_load(self, name: str, size: int, load_cost: float) -> None:
        freq = self._past_freq.pop(name, 0) + 1
        self._ticks += 1
        entry = _Entry(max(size, 1), load_cost, freq, 0.0, self._ticks)
        entry.priority = self._priority(entry)
        self._entries[name] = entry

    def record_hit(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is None:
            return
        entry.freq += 1
        self._ticks += 1
        entry.touched = self._ticks
        entry.priority = self._priority(entry)

    def record_hits(self, name: str, count: int) -> None:
        entry = self._entries.get(name)
        if entry is None or count <= 0:
            return
        entry.freq += count
        self._ticks += count
        entry.touched = self._ticks
        entry.priority = self._priority(entry)

    def record_evict(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        # max(): a pinned model may have forced a higher-H victim; the clock never goes back.
        self._clock = max(self._clock, entry.priority)
        remember(self._past_freq, name, entry.freq, self._history)

    def choose_victims(self, residents: Sequence[Resident], bytes_needed: int) -> list[str]:
        if bytes_needed <= 0:
            return []
        return take_until(sorted(residents, key=self._rank), bytes_needed)

    def priority(self, name: str) -> float | None:
        """The model's current H, None if it is not resident (for logs and tests)."""
        entry = self._entries.get(name)
        return None if entry is None else entry.priority

    def _priority(self, entry: _Entry) -> float:
        return self._clock + entry.freq * entry.cost / entry.size

    def _rank(self, resident: Resident) -> tuple[float, int]:
        entry = self._entries.get(resident.name)
        if entry is None:  # never seen loaded: rank it as a fresh load
            return self._clock + resident.load_cost / max(resident.size, 1), -1
        return entry.priority, entry.touched


@dataclass(slots=True)
class _Scored:
    size: int
    cost: float
    score: float


class DecayedGDSFPolicy:
    """GDSF's value ``freq * cost / size``, but aged by decaying frequencies instead of the
    clock L: every request counts for half as much after ``half_life`` further requests.

    Why: on Zipf 0.9 traces plain GDSF reaches only ~0.87 of Belady's hit ratio at 5-10%
    cache (docs/eviction-results.md). Each eviction raises L, so a model loaded once starts
    above popular residents last hit a while ago, and one-off loads push them out. With
    decayed frequencies a newcomer is worth one fresh request; the steady ones keep their
    lead, and a model that goes cold still loses half its weight every half-life.
    Frequencies outlive evictions (up to ``history`` models, oldest dropped first).
    """

    name = "gdsf-decay"
    # Weights grow as 2 ** (ticks / half_life); rescale everything long before floats overflow.
    _RESCALE_EXPONENT = 256.0

    def __init__(self, half_life: int = 10_000, history: int = 100_000) -> None:
        self._entries: dict[str, _Scored] = {}
        self._past_score: OrderedDict[str, float] = OrderedDict()
        self._half_life = float(half_life)
        self._history = history
        self._ticks = 0

    def record_load(self, name: str, size: int, load_cost: float) -> None:
        weight = self._weight()  # first: it may rescale the past scores
        score = self._past_score.pop(name, 0.0) + weight
        self._entries[name] = _Scored(max(size, 1), load_cost, score)

    def record_hit(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is not None:
            weight = self._weight()  # first: it may rescale entry.score
            entry.score += weight

    def record_hits(self, name: str, count: int) -> None:
        entry = self._entries.get(name)
        if entry is None or count <= 0:
            return
        if (self._ticks + count) / self._half_life > self._RESCALE_EXPONENT:
            for _ in range(count):  # a rescale falls inside: rare, one at a time
                self.record_hit(name)
            return
        # The weights of ticks t+1 .. t+count, a geometric series.
        first = math.pow(2.0, (self._ticks + 1) / self._half_life)
        entry.score += first * _series(count, math.log(2) / self._half_life)
        self._ticks += count

    def record_evict(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        remember(self._past_score, name, entry.score, self._history)

    def choose_victims(self, residents: Sequence[Resident], bytes_needed: int) -> list[str]:
        if bytes_needed <= 0:
            return []
        return take_until(sorted(residents, key=self._value), bytes_needed)

    def _value(self, resident: Resident) -> float:
        entry = self._entries.get(resident.name)
        if entry is None:  # never seen loaded: worth nothing yet
            return 0.0
        return entry.score * entry.cost / entry.size

    def _weight(self) -> float:
        """Inflating each new request's weight is decaying all older ones, in O(1)."""
        self._ticks += 1
        exponent = self._ticks / self._half_life
        if exponent > self._RESCALE_EXPONENT:
            self._rescale(math.pow(2.0, -exponent))
            exponent = 0.0
        return math.pow(2.0, exponent)

    def _rescale(self, factor: float) -> None:
        self._ticks = 0
        for entry in self._entries.values():
            entry.score *= factor
        for name in self._past_score:
            self._past_score[name] *= factor


@dataclass(slots=True)
class _Visited:
    size: int
    cost: float
    score: float
    last: int
    """Tick of its last counted visit."""


class VisitRatePolicy:
    """GDSF's value ``rate * cost / size``, with the rate estimated for traffic that shifts
    and bursts (``mme-gateway simulate --sweep``, docs/eviction-results.md):

    - it counts visits, not requests: a request within ``gap`` of the model's last counted
      one adds nothing, so a one-off burst (a backfill, an evaluation run) weighs like one
      request, not like a model in steady use;
    - visits decay with a ``half_life``: popularity that moves on is forgotten;
    - the rate is capped at ``recency`` visits over the requests since the last one: a model
      that was hot and then went quiet loses its lead at once, not after half-lives.

    ``gap`` and ``half_life`` count requests in units of the models resident, so the policy
    behaves alike for 10 models or 10,000, and whatever the request rate. Scores outlive
    evictions (up to ``history`` models, oldest dropped first): a model asked for again soon
    after its eviction comes back with its record.
    """

    name = "gdsf-visits"
    _RESCALE_EXPONENT = 256.0

    def __init__(
        self,
        gap: float = 1.0,
        half_life: float = 30.0,
        recency: float = 2.0,
        history: int = 100_000,
    ) -> None:
        self._entries: dict[str, _Visited] = {}
        self._past: OrderedDict[str, float] = OrderedDict()
        self._gap = gap
        self._half_life = half_life
        self._recency = recency
        self._history = history
        self._ticks = 0
        self._exponent = 0.0
        """log2 of a visit's weight now: it grows by ``_step`` per tick."""
        self._step = 1.0 / half_life
        """1 / (half_life x residents), kept as residents come and go (off the hot path)."""
        self._span = gap
        """Ticks within which a request is the same visit: gap x residents."""

    def record_load(self, name: str, size: int, load_cost: float) -> None:
        self._tick()  # first: it may rescale the past scores
        weight = math.pow(2.0, self._exponent)
        score = self._past.pop(name, 0.0) + weight
        self._entries[name] = _Visited(max(size, 1), load_cost, score, self._ticks)
        self._resize()

    def record_hit(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is None:
            return
        self._tick()  # first: it may rescale entry.score
        if self._ticks - entry.last >= self._span:  # else: the same visit
            entry.score += math.pow(2.0, self._exponent)
            entry.last = self._ticks

    def record_hits(self, name: str, count: int) -> None:
        entry = self._entries.get(name)
        if entry is None or count <= 0:
            return
        if self._exponent + count * self._step > self._RESCALE_EXPONENT:
            for _ in range(count):  # a rescale falls inside: rare, one at a time
                self.record_hit(name)
            return
        # The hits take ticks start+1 .. end. The first that counts as a visit is the first
        # at least ``span`` after the last one counted, then every ceil(span) ticks.
        start, end = self._ticks, self._ticks + count
        every = max(math.ceil(self._span), 1)
        first = max(start + 1, math.ceil(entry.last + self._span))
        if first <= end:
            visits = (end - first) // every + 1
            weight = math.pow(2.0, self._exponent + (first - start) * self._step)
            entry.score += weight * _series(visits, math.log(2) * every * self._step)
            entry.last = first + (visits - 1) * every
        self._ticks = end
        self._exponent += count * self._step

    def record_evict(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        remember(self._past, name, entry.score, self._history)
        self._resize()

    def choose_victims(self, residents: Sequence[Resident], bytes_needed: int) -> list[str]:
        if bytes_needed <= 0:
            return []
        # A score over the weight of a visit now, times visits per request at steady state.
        scale = math.pow(2.0, -self._exponent) * math.log(2) * self._step
        return take_until(sorted(residents, key=partial(self._value, scale)), bytes_needed)

    def _value(self, scale: float, resident: Resident) -> float:
        entry = self._entries.get(resident.name)
        if entry is None:  # never seen loaded: worth nothing yet
            return 0.0
        rate = min(entry.score * scale, self._recency / (self._ticks - entry.last + 1))
        return rate * entry.cost / entry.size

    def _resize(self) -> None:
        residents = max(len(self._entries), 1)
        self._step = 1.0 / (self._half_life * residents)
        self._span = self._gap * residents

    def _tick(self) -> None:
        """Inflating each new visit's weight is decaying all older ones, in O(1)."""
        self._ticks += 1
        self._exponent += self._step
        if self._exponent > self._RESCALE_EXPONENT:
            factor = math.pow(2.0, -self._exponent)
            self._exponent = 0.0
            for entry in self._entries.values():
                entry.score *= factor
            for name in self._past:
                self._past[name] *= factor


def _series(terms: int, rate: float) -> float:
    """1 + e^rate + e^(2 rate) + ... (``terms`` terms), accurate for a tiny ``rate``."""
    if rate == 0.0:
        return float(terms)
    return math.expm1(terms * rate) / math.expm1(rate)


POLICIES: dict[str, Callable[[], EvictionPolicy]] = {
    "lru": LRUPolicy,
    "gdsf": GDSFPolicy,
    "gdsf-decay": DecayedGDSFPolicy,
    "gdsf-visits": VisitRatePolicy,
}
DEFAULT_POLICY = "gdsf-visits"


def make_policy(name: str) -> EvictionPolicy:
    """A fresh policy by name; ValueError naming the valid ones."""
    factory = POLICIES.get(name)
    if factory is None:
        valid = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown eviction policy {name!r}; choose one of: {valid}")
    return factory()
