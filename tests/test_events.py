"""explorer.train.events.Events: the one listener mechanism of the trainer, the background
runner and the gradient recorder."""
import pytest

from explorer.train.events import Events


def test_listeners_are_called_in_subscription_order_with_the_payload():
    events, calls = Events(("step", "eval")), []
    events.on("step", lambda p: calls.append(("a", p)))
    events.on("step", lambda p: calls.append(("b", p)))
    events.on("eval", lambda p: calls.append(("eval", p)))
    events.emit("step", 1)
    assert calls == [("a", 1), ("b", 1)]


def test_unknown_event_names_the_allowed_ones():
    events = Events(("step", "run_end"))
    for call in (lambda: events.on("stpe", print), lambda: events.off("stpe", print),
                 lambda: events.emit("stpe", None), lambda: events.listening("stpe")):
        with pytest.raises(ValueError, match=r"unknown event 'stpe'; expected one of: step, run_end"):
            call()
    with pytest.raises(ValueError, match="at least one event name"):
        Events(())


def test_on_returns_the_callback_and_refuses_what_is_not_callable():
    events = Events(("step",))

    def listener(payload):
        pass

    assert not events.listening("step")
    assert events.on("step", listener) is listener and events.listening("step")
    with pytest.raises(TypeError, match="listener of 'step' must be callable, got int"):
        events.on("step", 3)


def test_off_stops_one_subscription_and_refuses_a_stranger():
    events, calls = Events(("step",)), []
    events.on("step", calls.append)
    events.on("step", calls.append)                 # subscribed twice: called twice
    events.emit("step", 1)
    events.off("step", calls.append)                # once off: called once
    events.emit("step", 2)
    events.off("step", calls.append)
    events.emit("step", 3)
    assert calls == [1, 1, 2] and not events.listening("step")
    with pytest.raises(ValueError, match="is not a listener of 'step'"):
        events.off("step", calls.append)


def test_a_listener_removing_itself_during_emit_does_not_skip_the_next_one():
    events, calls = Events(("step",)), []

    def once(payload):
        calls.append(("once", payload))
        events.off("step", once)

    events.on("step", once)
    events.on("step", lambda p: calls.append(("always", p)))
    events.emit("step", 1)
    events.emit("step", 2)
    assert calls == [("once", 1), ("always", 1), ("always", 2)]


def test_a_listener_added_during_emit_is_first_called_by_the_next_emit():
    events, calls = Events(("step",)), []

    def adder(payload):
        calls.append(("adder", payload))
        if payload == 1:
            events.on("step", lambda p: calls.append(("late", p)))

    events.on("step", adder)
    events.emit("step", 1)
    events.emit("step", 2)
    assert calls == [("adder", 1), ("adder", 2), ("late", 2)]


def test_by_default_a_listener_error_propagates_and_stops_the_rest():
    events, calls = Events(("step",)), []
    events.on("step", lambda p: 1 / 0)
    events.on("step", calls.append)
    with pytest.raises(ZeroDivisionError):
        events.emit("step", 1)
    assert calls == []


def test_with_on_error_the_error_is_handed_over_and_the_rest_still_run():
    errors, calls = [], []
    events = Events(("state",), on_error=lambda event, exc: errors.append((event, type(exc))))
    events.on("state", lambda p: 1 / 0)
    events.on("state", calls.append)
    events.emit("state", 1)
    assert errors == [("state", ZeroDivisionError)] and calls == [1]
