"""Named events with listeners: how the trainer, the background runner and the gradient
recorder tell views that something happened.

    events = Events(("step", "eval"))
    events.on("step", callback)        # callback(payload) on every events.emit("step", payload)
    events.off("step", callback)

Listeners are called in the order they subscribed. An emit calls the listeners subscribed
when it began: one that unsubscribes itself (or another) during an emit takes effect from
the next emit on, and a listener added during an emit is first called by the next one.
Subscribing and emitting may happen on different threads (a view subscribes on the
notebook's thread while the training thread emits).

What a listener's exception does is the owner's choice: by default it propagates out of
emit() and the listeners after it are not called; with `on_error`, emit() calls
on_error(event, exception) instead and goes on with the next listener.
"""
import threading
from collections.abc import Callable, Iterable
from typing import Any

Listener = Callable[[Any], object]


class Events:
    def __init__(self, names: Iterable[str],
                 on_error: Callable[[str, Exception], object] | None = None):
        self.names = tuple(names)
        if not self.names:
            raise ValueError("an Events needs at least one event name, got none")
        self._on_error = on_error
        # event -> tuple of listeners, replaced (never changed in place) under the lock, so
        # an emit on another thread iterates a consistent snapshot without taking the lock
        self._listeners = {name: () for name in self.names}
        self._lock = threading.Lock()

    def _check(self, event):
        if event not in self._listeners:
            raise ValueError(f"unknown event {event!r}; expected one of: {', '.join(self.names)}")

    def on(self, event: str, callback: Listener) -> Listener:
        """Call callback(payload) whenever `event` is emitted; returns callback (so `on` can
        decorate a function)."""
        self._check(event)
        if not callable(callback):
            raise TypeError(f"a listener of {event!r} must be callable, got "
                            f"{type(callback).__name__}: {callback!r:.80}")
        with self._lock:
            self._listeners[event] += (callback,)
        return callback

    def off(self, event: str, callback: Listener) -> None:
        """Stop calling callback on `event` (once, if it subscribed more than once). Raises
        ValueError if it is not subscribed."""
        self._check(event)
        with self._lock:
            listeners = list(self._listeners[event])
            if callback not in listeners:
                raise ValueError(f"{callback!r:.80} is not a listener of {event!r} (never "
                                 f"subscribed with on({event!r}, ...), or removed already)")
            listeners.remove(callback)
            self._listeners[event] = tuple(listeners)

    def listening(self, event: str) -> bool:
        """True if anyone listens to `event`."""
        return bool(self.listeners(event))

    def listeners(self, event: str) -> tuple:
        """The callbacks subscribed to `event`, in the order they subscribed."""
        self._check(event)
        return self._listeners[event]

    def emit(self, event: str, payload: Any) -> None:
        """Call every listener of `event` with payload (see the module docstring)."""
        self._check(event)
        for callback in self._listeners[event]:
            if self._on_error is None:
                callback(payload)
                continue
            try:
                callback(payload)
            except Exception as exc:     # noqa: BLE001 - the owner decided to go on
                self._on_error(event, exc)

    def __repr__(self):
        counts = ", ".join(f"{name}: {len(self._listeners[name])}" for name in self.names)
        return f"Events({counts})"
