"""Admission: at most N CLI processes at once on this server, and a bounded FIFO queue for
the rest. Background tasks take only the slots nobody in the queue waits for (``spare``).
Pure asyncio, no HTTP. (The per-key rate limit is counted in the database: ``rate_limit.py``.)

A turn admitted at once gets a ``Slot``; a turn that must wait gets a place in the queue,
which turns into a ``Slot`` when one frees up. Both live in the turn's ``Ticket``, which the
turn owns from the moment it exists: releasing the ticket (once, or any number of times)
gives back whatever it holds, so no path a turn takes can leak a slot or a queue place.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Slot:
    """One of the admission slots; ``release()`` gives it back exactly once."""

    def __init__(self, free: Callable[[], None]) -> None:
        self._free: Callable[[], None] | None = free

    @property
    def held(self) -> bool:
        return self._free is not None

    def release(self) -> None:
        free, self._free = self._free, None
        if free is not None:
            free()


class Ticket(Generic[T]):
    """A turn's claim on a slot: held now, or a place in the queue until one frees up."""

    def __init__(self, admission: Admission[T], item: T, slot: Slot | None) -> None:
        self._admission = admission
        self.item = item
        self._slot = slot
        # Set for a queued ticket; resolves to True when a slot was handed to it.
        self.admitted: asyncio.Future[bool] | None = None
        if slot is None:
            self.admitted = asyncio.get_running_loop().create_future()

    @property
    def slot(self) -> Slot | None:
        """The slot, once the ticket holds one."""
        return self._slot

    @property
    def waiting(self) -> bool:
        return self._slot is None and self.admitted is not None and not self.admitted.done()

    def _grant(self, slot: Slot) -> None:
        self._slot = slot
        assert self.admitted is not None
        self.admitted.set_result(True)

    def release(self) -> None:
        """Give back the slot, or leave the queue. Safe to call again."""
        if self._slot is not None:
            self._slot.release()
        elif self.admitted is not None and not self.admitted.done():
            self._admission._leave(self)


class Admission(Generic[T]):
    """Slots for running turns; queued tickets get them in order, one each, as they free up.

    ``on_position(item, position)`` is told every waiter's 1-based place whenever the queue
    changes, and ``None`` once it leaves the queue."""

    def __init__(self, slots: int, max_queue: int, on_position: Callable[[T, int | None], None]) -> None:
        self.slots = slots
        self.max_queue = max_queue
        self.running = 0
        self._queue: collections.deque[Ticket[T]] = collections.deque()
        self._on_position = on_position
        # Told (soon after, not inside the release) when a slot is free that nobody in the
        # queue wanted: background work may take it.
        self.on_spare: Callable[[], None] | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        """No free slot and no room left in the queue."""
        return self.running >= self.slots and len(self._queue) >= self.max_queue

    def ticket(self, item: T) -> Ticket[T] | None:
        """A slot now if one is free and nobody waits for it, else a place at the end of the
        queue; None when the queue is full too."""
        if self.running < self.slots and not self._queue:
            self.running += 1
            return Ticket(self, item, Slot(self._free))
        if len(self._queue) >= self.max_queue:
            return None
        ticket = Ticket(self, item, None)
        self._queue.append(ticket)
        self._on_position(item, len(self._queue))
        return ticket

    def resize(self, slots: int, max_queue: int) -> None:
        """New limits (a reload): more slots go to the waiters at once; fewer take effect as
        running turns end (none is stopped); a shorter queue refuses newcomers only."""
        self.slots, self.max_queue = slots, max_queue
        while self.running < self.slots and self._queue:
            ticket = self._queue.popleft()
            if ticket.waiting:
                self.running += 1
                ticket._grant(Slot(self._free))
                self._on_position(ticket.item, None)
        self._renumber()
        if self.running < self.slots and self.on_spare is not None:
            asyncio.get_running_loop().call_soon(self.on_spare)

    def spare(self, item: T) -> Ticket[T] | None:
        """A ticket holding a slot for background work: only when one is free and no turn
        waits for one (background work never takes a slot a waiting turn could have)."""
        if self.running >= self.slots or self._queue:
            return None
        self.running += 1
        return Ticket(self, item, Slot(self._free))

    def _leave(self, ticket: Ticket[T]) -> None:
        try:
            self._queue.remove(ticket)
        except ValueError:
            return
        assert ticket.admitted is not None
        if not ticket.admitted.done():
            ticket.admitted.set_result(False)
        self._on_position(ticket.item, None)
        self._renumber()

    def _free(self) -> None:
        """A slot came back: the first waiter gets it (the count of running stays)."""
        while self._queue:
            ticket = self._queue.popleft()
            if ticket.waiting:
                ticket._grant(Slot(self._free))
                self._on_position(ticket.item, None)
                self._renumber()
                return
        self.running -= 1
        if self.on_spare is not None:
            asyncio.get_running_loop().call_soon(self.on_spare)

    def _renumber(self) -> None:
        for place, ticket in enumerate(self._queue, start=1):
            self._on_position(ticket.item, place)
