"""The assertions of a test app: each failure says what was expected and shows what *was* published."""

from __future__ import annotations

from typing import Any

from tusk_events.testing.records import Letter, Published, describe, matches, report


class Assertions:
    """Mixed into :class:`~tusk_events.testing.TuskApp`; reads its ``published``, ``handled``, ``dead_letters``."""

    def published(self, type: str | None = None) -> list[Published]:
        raise NotImplementedError

    def handled(self, service: str) -> list[Published]:
        raise NotImplementedError

    def dead_letters(self, service: str | None = None) -> list[Letter]:
        raise NotImplementedError

    def assert_published(self, type: str, payload: Any = None, *, count: int | None = None) -> Published:
        """The first event of ``type`` whose payload matches (dict keys given must match); fails
        showing every published event. ``count``: exactly that many must match."""
        __tracebackhide__ = True
        found = [p for p in self.published(type) if payload is None or matches(payload, p.payload)]
        what = f"{type!r} event" + ("" if payload is None else f" with a payload {describe(payload)}")
        if not found or (count is not None and len(found) != count):
            want = "at least one" if count is None else f"exactly {count}"
            self._fail(f"expected {want} {what}, found {len(found)}")
        return found[0]

    def assert_not_published(self, type: str, payload: Any = None) -> None:
        __tracebackhide__ = True
        found = [p for p in self.published(type) if payload is None or matches(payload, p.payload)]
        if found:
            what = f"{type!r} event" + ("" if payload is None else f" with a payload {describe(payload)}")
            self._fail(f"expected no {what}, found {len(found)}")

    def assert_handled(self, service: str, *, count: int | None = None, type: str | None = None) -> list[Published]:
        """The events ``service`` handled (of ``type``); at least one, or exactly ``count``."""
        __tracebackhide__ = True
        got = [p for p in self.handled(service) if type is None or p.type == type]
        if (count is None and not got) or (count is not None and len(got) != count):
            want = "at least one" if count is None else f"exactly {count}"
            of = "" if type is None else f" {type!r}"
            self._fail(f"expected [{service}] to have handled {want}{of} event, it handled {len(got)}")
        return got

    def assert_dead_lettered(
        self, service: str, *, reason_contains: str | None = None, payload: Any = None
    ) -> Letter:
        """The first dead letter of ``service`` whose reason contains the text (and payload matches)."""
        __tracebackhide__ = True
        letters = self.dead_letters(service)
        found = [
            d for d in letters
            if (reason_contains is None or reason_contains in d.reason)
            and (payload is None or matches(payload, d.payload))
        ]
        if not found:
            cond = [f"a reason containing {reason_contains!r}"] if reason_contains is not None else []
            cond += [f"a payload {describe(payload)}"] if payload is not None else []
            self._fail(
                f"expected a dead letter in [{service}]" + (" with " + " and ".join(cond) if cond else "")
                + f", found {len(letters)} in [{service}] and none that fits"
            )
        return found[0]

    def assert_no_dead_letters(self, service: str | None = None) -> None:
        __tracebackhide__ = True
        letters = self.dead_letters(service)
        if letters:
            where = f" in [{service}]" if service else ""
            self._fail(f"expected no dead letters{where}, found {len(letters)}")

    def _fail(self, message: str) -> None:
        __tracebackhide__ = True
        raise AssertionError(message + "\n" + report(self.published(), self.dead_letters()))


__all__ = ["Assertions"]
