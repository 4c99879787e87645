"""Delivering a batch of events: one POST each, then delivered, parked for retry, or dead-lettered.

Each event keeps its own outcome and attempt count, whatever batch it travels in.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis

from producer.envelope import Attempt, Event

from . import markers, metering
from .accounts import Account, Accounts
from .backoff import parse_retry_after, retry_delay
from .deadletter import DeadLetters
from .inflight import AccountLoad, default_cap
from .limechat import Answer, LimechatClient
from .logs import log_outcome
from .outcome import DeadLetter, Delivered, Outcome, Reason, Retry, classify_error, classify_status
from .ratelimit import RateLimiter
from .schedule import RetrySchedule
from .settings import Settings
from .stats import count_outcome
from .stopflag import StopFlag
from .vetting import envelope_problem, storable, usable_text

log = logging.getLogger("limechat_events.delivery")

#: A wait for a rate-limit slot up to this long is slept; a longer one parks the event.
MAX_SLOT_SLEEP_SECONDS = 1.0
#: A parked event comes back this long before its slot, and sleeps the rest.
SLOT_LEAD_SECONDS = 0.5
#: Delivered markers of a batch are written at least this often (and when it ends).
MARKER_FLUSH_SECONDS = 0.5
#: Times a thread asks the limiter for one event before handing it to the schedule.
_LIMITER_TRIES = 20

#: Parks the events of one account among those given (its next events wait too); returns
#: the ids it parked.
Parker = Callable[[Sequence[Event]], set[str]]


class _Generation:
    """One set of accounts, and how many requests are out with its tokens."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.in_flight = 0


class Deliverer:
    """The work of the ``deliver`` task; one per worker process, shared by its threads.

    Each event goes out with its own account's headers and under its account's rate limit.
    The accounts can be swapped while deliveries run (:meth:`use_accounts`, on SIGHUP).
    """

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        limechat: LimechatClient,
        schedule: RetrySchedule,
        dead_letters: DeadLetters,
        *,
        accounts: Accounts | None = None,
        on_dead_letter: Callable[[dict[str, Any]], None] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._redis = client
        self._limechat = limechat
        self.schedule = schedule
        self.dead_letters = dead_letters
        self._generation = _Generation(accounts or settings.account_set())
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        #: account id -> its limiter (made on first use; remade if its rate changes)
        self._limiters: dict[str, RateLimiter] = {}
        self._on_dead_letter = on_dead_letter
        self._rand = rand
        #: requests out per account in this process, capped so a slow one keeps to its share
        self.load = AccountLoad(
            lambda: default_cap(
                settings.concurrency, len(self.accounts.by_id), settings.account_concurrency
            )
        )
        #: Set when the worker begins a warm shutdown: finish the POST in flight, hand the
        #: rest of the batch to the scheduler, so SIGTERM is obeyed within one HTTP timeout.
        self.stopping = StopFlag()
        #: how long a delivered event stays marked (worker/markers.py)
        self.marked_for = markers.window(settings.visibility_timeout, settings.retry_max_seconds)
        self._markers = markers.MarkerWriter(client, self.marked_for)

    def deliver_message(
        self, args: Sequence[Any], kwargs: dict[str, Any], *, redelivered: bool = True
    ) -> None:
        """Handle one task message: ``deliver(events)``. Raises only ``redis.RedisError``.

        Every event ends delivered, parked or dead-lettered, whatever the others hold: an event
        that fails the checks is dead-lettered as ``malformed``, one whose handling raises as
        ``internal_error``. ``redelivered`` (set on a message put back after a crash, a
        shutdown or a failure, and on retries, replays and imports) is what makes the delivered
        markers worth a look: a first delivery holds no event LimeChat already accepted.
        """
        if len(args) != 1 or kwargs or not isinstance(args[0], list):
            self._dead_letter_malformed({"args": list(args), "kwargs": kwargs}, "not deliver(list)")
            return
        events: list[Event] = []
        for raw in args[0]:
            problem = envelope_problem(raw)  # (never raises, whatever raw holds)
            if problem:
                self._dead_letter_malformed(raw, problem)
            else:
                events.append(raw)
        self.deliver_batch(events, check_markers=redelivered)

    def deliver_batch(self, events: Sequence[Event], *, check_markers: bool = True) -> None:
        # The message goes back to the queue if it is held past the visibility timeout, so a
        # long batch hands what it has not started to the scheduler instead of overrunning.
        deadline = time.monotonic() + self.settings.visibility_timeout / 2
        events = _once_each(events)
        done = self._already_delivered(events) if check_markers else set()
        with self._delivered_writes() as record:
            self._deliver_each(events, done, deadline, record)

    def _deliver_each(
        self,
        events: Sequence[Event],
        done: set[str],
        deadline: float,
        record: Callable[[Event, Answer], None],
    ) -> None:
        parked: set[str] = set()  # ids parked with an earlier event of their account
        for index, event in enumerate(events):
            if event["id"] in parked:
                continue
            if event["id"] in done:
                log.info("skipped evt=%s event=%s: already delivered", event["id"], event["event"])
                continue
            if self.stopping.is_set() or time.monotonic() > deadline:
                rest = events[index:]
                self._hand_off([e for e in rest if e["id"] not in done and e["id"] not in parked])
                return
            try:
                park_rest = self.deliver_one(event, record)
                if park_rest is not None:
                    # Its account cannot send now (its next slot is far off, or it has all
                    # the requests out it may): neither can the rest of its events here.
                    # Park them all in one go, never holding a thread for them.
                    rest = events[index + 1 :]
                    parked |= park_rest([e for e in rest if e["id"] not in done])
            except redis.RedisError:
                raise  # the task hands the whole message back
            except Exception as exc:
                # A bug of ours must not lose the event (Celery would acknowledge the message
                # of a failed task): keep it in the DLQ with what went wrong, and go on.
                log.exception("internal error on evt=%s", event["id"])
                self._dead_letter(event, Reason.INTERNAL, None, f"{type(exc).__name__}: {exc}")

    def _hand_off(self, events: Sequence[Event]) -> None:
        """Give the unstarted rest of a batch to the scheduler, in one transaction.

        Events skipped for their delivered marker are not among them: LimeChat has them.
        """
        pipe = self._redis.pipeline(transaction=True)
        for event in events:
            self.schedule.park(event, 0.0, client=pipe)
        pipe.execute()
        why = "shutting down" if self.stopping.is_set() else "batch ran long"
        log.warning("%s: %d events handed to the scheduler", why, len(events))

    @property
    def accounts(self) -> Accounts:
        return self._generation.accounts

    def use_accounts(self, accounts: Accounts, wait: float = 30.0) -> bool:
        """Deliver with ``accounts`` from the next request on; then wait (up to ``wait``
        seconds) for the requests already out with the old tokens. True if they all came back.
        """
        with self._lock:
            old, self._generation = self._generation, _Generation(accounts)
            return self._drained.wait_for(lambda: old.in_flight == 0, wait)

    def limiter(self, account: Account) -> RateLimiter | None:
        """The cluster-wide limiter of ``account`` (None when its rate limit is off)."""
        rate = account.rate
        if rate is None:
            return None
        found = self._limiters.get(account.id)
        if found is None or found.rate != rate:
            found = self._limiters[account.id] = RateLimiter(self._redis, account.id, rate)
        return found

    def deliver_one(
        self, event: Event, record: Callable[[Event, Answer], None] | None = None
    ) -> Parker | None:
        """One event: cap, limit, POST, classify; ``record`` takes a delivered one (default:
        now).

        Returns how to park the account's next events when this one was parked because its
        account has as many requests out in this process as it may (see worker/inflight.py),
        or its rate-limit slot is more than :data:`MAX_SLOT_SLEEP_SECONDS` away; else None.
        """
        named = event.get("account")
        account = self.accounts.resolve(named)
        if account is None:
            self._dead_letter_unknown(event)
            return None
        if not self.load.claim(account.id):
            # (parked as it is: a reload meanwhile may leave it no account to be matched to)
            self._park_for_a_turn(account.id, [event])
            return functools.partial(self._park_turned_away, account.id)
        try:
            return self._deliver_claimed(event, named, account, record)
        finally:
            self.load.release(account.id)

    def _deliver_claimed(
        self,
        event: Event,
        named: str | None,
        account: Account,
        record: Callable[[Event, Answer], None] | None,
    ) -> Parker | None:
        limiter = self.limiter(account)
        if limiter is not None:
            parked = self._take_slot(event, limiter)
            if parked is not None:
                return functools.partial(self._park_for_slots, limiter) if parked else None
        event.pop("slot_at", None)
        answer = self._post(event, named)
        if answer is None:  # its account was removed while it waited for its slot
            self._dead_letter_unknown(event)
            return None
        self.load.observe(account.id, answer.ms / 1000)
        outcome = self._classify(answer)
        if limiter is not None and answer.status == 429:
            # LimeChat's Retry-After is honoured up to the retry cap, like an event's own wait.
            asked = getattr(outcome, "retry_after", None)
            capped = None if asked is None else min(asked, self.settings.retry_max_seconds)
            until = limiter.pause(capped)
            log.warning("account paused by a 429 until %.3f (Redis clock): %s", until, account.id)
        event = _with_attempt(event, answer)
        if isinstance(outcome, Delivered):
            if record is None:
                with self._delivered_writes() as record_now:
                    record_now(event, answer)
            else:
                record(event, answer)
        elif isinstance(outcome, Retry) and event["attempts"] < self.settings.max_attempts:
            self._park(event, outcome, answer)
        else:
            reason = outcome.reason if isinstance(outcome, DeadLetter) else Reason.EXHAUSTED
            self._dead_letter(event, reason, answer, answer.error or _describe(outcome))
        return None

    def _post(self, event: Event, named: str | None) -> Answer | None:
        """POST with the account as it is now (a rotated token counts from here); None if the
        account is gone. The request is counted in flight for :meth:`use_accounts`."""
        with self._lock:
            generation = self._generation
            account = generation.accounts.resolve(named)
            if account is None:
                return None
            generation.in_flight += 1
        try:
            return self._limechat.post(event, account)
        finally:
            with self._lock:
                generation.in_flight -= 1
                if generation.in_flight == 0:
                    self._drained.notify_all()

    def _label(self, event: Event) -> str | None:
        """The account an event goes to, for logs: the one it names, or the default."""
        named = event.get("account")
        return named if isinstance(named, str) else self.accounts.default

    def _dead_letter_unknown(self, event: Event) -> None:
        error = self.accounts.unknown(event.get("account"))
        self._dead_letter(event, Reason.UNKNOWN_ACCOUNT, None, error)

    def _of_account(self, account: str, events: Sequence[Event]) -> list[Event]:
        accounts = self.accounts
        mine = []
        for event in events:
            found = accounts.resolve(event.get("account"))
            if found is not None and found.id == account:
                mine.append(event)
        return mine

    def _park_turned_away(self, account: str, events: Sequence[Event]) -> set[str]:
        """Park ``account``'s events among ``events`` (it has all the requests out it may);
        returns their ids."""
        return self._park_for_a_turn(account, self._of_account(account, events))

    def _park_for_a_turn(self, account: str, mine: Sequence[Event]) -> set[str]:
        """Park ``mine`` to come back paced (no attempt counted), all or none; their ids."""
        if not mine:
            return set()
        pipe = self._redis.pipeline(transaction=True)
        for event, delay in zip(mine, self.load.come_back_in(account, len(mine)), strict=True):
            self.schedule.park(event, delay, client=pipe)
        pipe.execute()
        log.debug("account %s at its cap of requests out: %d events parked", account, len(mine))
        return {e["id"] for e in mine}

    def _park_for_slots(self, limiter: RateLimiter, events: Sequence[Event]) -> set[str]:
        """Park ``limiter``'s account's events among ``events`` until slots reserved for them
        in one call, in one pipeline; returns their ids. (Events holding a slot already, back
        from the schedule, go their own way.)"""
        mine = [e for e in self._of_account(limiter.account, events) if "slot_at" not in e]
        if not mine:
            return set()
        now, slots = limiter.reserve(len(mine))
        pipe = self._redis.pipeline(transaction=True)  # (all or none: the message may go back)
        for event, slot in zip(mine, slots, strict=True):
            delay = slot - now - SLOT_LEAD_SECONDS
            self.schedule.park({**event, "slot_at": slot}, delay, client=pipe)
        pipe.execute()
        log.debug("account %s: %d events parked for their slots", limiter.account, len(mine))
        return {e["id"] for e in mine}

    @contextlib.contextmanager
    def _delivered_writes(self) -> Iterator[Callable[[Event, Answer], None]]:
        """Mark each delivered event at once, and write the counters in one call.

        A marker is handed to the process's marker writer as soon as LimeChat accepted the
        event (worker/markers.py), so that a crash resends little more than what was in
        flight. The counters (and the markers' expiry) are written, once the batch's markers
        are, when the batch ends (before its message is acknowledged) and at least every
        :data:`MARKER_FLUSH_SECONDS` during it: one call for many events, at the price of
        counting again, after a crash, what was delivered since the last write.
        """
        tally = metering.Tally()
        ticket = 0
        last_flush = time.monotonic()

        def flush() -> None:
            nonlocal tally, last_flush
            buckets = self._markers.wait(ticket)
            pipe = self._redis.pipeline(transaction=False)
            markers.keep(pipe, buckets, self.marked_for)
            tally.write(pipe, "delivered", time.time())
            pipe.execute()
            tally = metering.Tally()
            last_flush = time.monotonic()

        def record(event: Event, answer: Answer) -> None:
            nonlocal ticket
            ticket = self._markers.add(event["id"])
            tally.add(
                event["event"], answer.status, created_at=event.get("created_at"), now=time.time()
            )
            log_outcome(log, logging.INFO, "delivered", event, answer, account=self._label(event))
            if time.monotonic() - last_flush >= MARKER_FLUSH_SECONDS:
                flush()

        try:
            yield record
        finally:
            if tally.count:
                flush()

    def _dead_letter(self, event: Event, reason: Reason, answer: Answer | None, error: str) -> None:
        """Store a dead letter (counted, logged, reported once); raises only ``RedisError``."""
        try:
            entry, new = self.dead_letters.add(
                event,
                reason,
                status=answer.status if answer else None,
                response_body=answer.body if answer else "",
                error=error,
            )
        except redis.RedisError:
            raise
        except Exception as exc:  # (what arrived could not be stored as it was: keep a preview)
            log.exception("dead letter of evt=%s stored as a preview", event.get("id"))
            placeholder = _placeholder(event, event.get("id"))
            entry, new = self.dead_letters.add(
                placeholder, reason, error=f"{error} (stored as a preview: {exc!r})"[:2048]
            )
        if new:  # a redelivered event dead-lettered again is neither counted nor reported twice
            pipe = self._redis.pipeline(transaction=False)
            count_outcome(pipe, "dead_lettered", str(event.get("event")), entry["status"])
            pipe.execute()
        log_outcome(
            log,
            logging.ERROR,
            "dead-lettered",
            event,
            answer,
            account=self._label(event),
            reason=reason.value,
        )
        if new and self._on_dead_letter is not None:
            try:
                self._on_dead_letter({**entry, "account": self._label(event)})
            except Exception:  # (a report that fails must not undo the dead letter)
                log.exception("could not report the dead letter of evt=%s", entry["event_id"])

    def _take_slot(self, event: Event, limiter: RateLimiter) -> bool | None:
        """Wait for the account's rate limit: None to send now, True if parked for a slot far
        off, False if parked to come back at once (crowded out of the gate).

        Short waits are slept; a long one parks the event (no attempt counted) holding its
        reserved slot, to come back just before it.
        """
        held = event.get("slot_at")
        for _ in range(_LIMITER_TRIES):
            grant = limiter.acquire(held)
            if grant.go:
                return None
            if grant.wait > MAX_SLOT_SLEEP_SECONDS:
                self.schedule.park({**event, "slot_at": grant.at}, grant.wait - SLOT_LEAD_SECONDS)
                log.debug("rate limited evt=%s: slot in %.2fs, parked", event["id"], grant.wait)
                return True
            time.sleep(grant.wait)
            held = grant.at
        # Crowded out of the gate many times in a row: let the schedule bring it back.
        self.schedule.park({**event, "slot_at": grant.at}, 0.0)
        return False

    def _park(self, event: Event, outcome: Retry, answer: Answer) -> None:
        delay = retry_delay(
            event["attempts"],
            self.settings.retry_base_seconds,
            self.settings.retry_max_seconds,
            self._rand(),
            outcome.retry_after,
        )
        pipe = self._redis.pipeline(transaction=False)
        self.schedule.park(event, delay, client=pipe)
        count_outcome(pipe, "retried", event["event"], answer.status)
        pipe.execute()
        log_outcome(
            log,
            logging.WARNING,
            "retry scheduled",
            event,
            answer,
            account=self._label(event),
            reason=outcome.reason.value,
            retry_in=round(delay, 3),
        )

    def _classify(self, answer: Answer) -> Outcome:
        if answer.status is None:
            return classify_error(answer.timed_out)
        return classify_status(answer.status, parse_retry_after(answer.retry_after, time.time()))

    def _already_delivered(self, events: Sequence[Event]) -> set[str]:
        return markers.delivered(self._redis, [e["id"] for e in events], self.marked_for)

    def _dead_letter_malformed(self, raw: object, problem: str) -> None:
        event_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(raw, dict) and "__malformed__" in raw:
            raw = raw.get("raw")  # the queue item as it arrived (see worker.transport)
        self._dead_letter(_placeholder(raw, event_id), Reason.MALFORMED, None, problem)


def _once_each(events: Sequence[Event]) -> Sequence[Event]:
    """``events`` with each id once: two copies of one event in one batch (coalesced from two
    messages, e.g. an outbox relay's re-send waiting beside the first) would both be sent, as
    the markers are read before the batch starts."""
    seen: set[str] = set()
    once = []
    for event in events:
        if event["id"] in seen:
            log.info("skipped evt=%s event=%s: twice in one batch", event["id"], event["event"])
            continue
        seen.add(event["id"])
        once.append(event)
    return once if len(once) < len(events) else events


def _placeholder(raw: object, event_id: object) -> Any:
    """What a dead letter keeps of something that is not a sound event: a storable ``raw``."""
    name = raw.get("event") if isinstance(raw, dict) else None
    return {
        "id": usable_text(event_id) or _new_id(),
        "event": usable_text(name) or "(malformed)",
        "raw": storable(raw),
    }


def _with_attempt(event: Event, answer: Answer) -> Event:
    attempt: Attempt = {
        "at": time.time(),
        "status": answer.status,
        "error": answer.error,
        "ms": answer.ms,
    }
    return {**event, "attempts": event["attempts"] + 1, "history": [*event["history"], attempt]}


def _describe(outcome: Outcome) -> str:
    if isinstance(outcome, Retry):
        return f"gave up after the last attempt ({outcome.reason.value})"
    return ""


def _new_id() -> str:
    return str(uuid.uuid4())
