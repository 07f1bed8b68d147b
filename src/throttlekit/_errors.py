"""
The exceptions throttlekit raises on purpose, all under one root.

::

    Exception
    └── ThrottlekitError
        ├── ConfigError (also ValueError)        a configuration cannot be used
        ├── SelectorError (also ValueError)      an invalid Kubernetes label selector
        ├── UnitError (also ValueError)          an invalid rate or size text
        ├── ProcessControlError (also OSError)   the OS refused to start or signal a process
        ├── SiteUnavailable                      Redis (a shared site) cannot be reached
        └── ItemBlockError (also ExceptionGroup) failures of a run or of one block

Catch :class:`ThrottlekitError` to handle everything the library raises deliberately;
catch :class:`ValueError` if you only care that some input was bad. Programming errors
(a wrong argument type, say) stay ordinary :class:`TypeError` / :class:`ValueError`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from attrs import frozen

if sys.version_info < (3, 11):  # pragma: no cover - the backport on 3.10
    from exceptiongroup import ExceptionGroup

__all__ = [
    "CallbackWarning",
    "ConfigError",
    "ConfigProblem",
    "ItemBlockError",
    "PolicyRejectedWarning",
    "ProcessControlError",
    "SelectorError",
    "SiteUnavailable",
    "ThrottlekitError",
    "UnitError",
]


class ThrottlekitError(Exception):
    """
    Root of every exception that throttlekit raises on purpose.

    It exists so that an embedding system can tell "throttlekit refused this" from
    "something else broke" with a single ``except`` clause.
    """


@frozen(kw_only=True)
class ConfigProblem:
    """
    One thing wrong (or suspicious) in a configuration document, and where it is.

    The same record is used for hard errors (inside :class:`ConfigError`) and for the
    warnings that lenient loading collects; ``str()`` is ``"path: message"``.
    """

    #: Where the value is in the document, in a JSONPath-like form such as
    #: ``loadConcurrency.perNodeConfig[1].number``; an empty string means "the whole
    #: document".
    path: str
    #: What is wrong and, where it can, what to write instead.
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(ThrottlekitError, ValueError):
    """
    A configuration cannot be used.

    Unlike a typical parser error, it carries *every* problem found, not only the first,
    so that one run of ``throttlekit validate`` is enough to fix a document: they are in
    ``problems``, and ``str()`` lists them one a line.
    """

    #: The :class:`ConfigProblem` records, in document order.
    problems: tuple[ConfigProblem, ...]

    def __init__(self, problems: Iterable[ConfigProblem] | str) -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem(path="", message=problems)]
        self.problems = tuple(problems)
        if not self.problems:
            raise ValueError("ConfigError needs at least one problem")
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} problems:"]
        lines.extend(f"  - {problem}" for problem in self.problems)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[type[ConfigError], tuple[tuple[ConfigProblem, ...]]]:
        return (type(self), (self.problems,))


class SelectorError(ThrottlekitError, ValueError):
    """
    A label selector is not valid Kubernetes syntax or semantics.

    Raised by :meth:`LabelSelector.parse` and :meth:`LabelSelector.from_dict`. ``path``
    locates the offending part inside the selector (for example
    ``matchExpressions[0].operator``); it is empty for the string syntax, where the
    message quotes the offending text instead.
    """

    #: The offending part inside the selector; empty for the string syntax.
    path: str

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_selector_error, (self.message, self.path))


def _rebuild_selector_error(message: str, path: str) -> SelectorError:
    return SelectorError(message, path=path)


class ProcessControlError(ThrottlekitError, OSError):
    """
    The operating system refused to start, signal or re-prioritise a process.

    An :class:`OSError` too: ``errno`` says why (``EPERM``: the process belongs to
    another user; ``ENOENT``: no such program; ``ENOSYS``: not Linux), and ``str()`` is a
    sentence naming the process.
    """

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror is not None else super().__str__()


class SiteUnavailable(ThrottlekitError):
    """
    The Redis (or Valkey) server of a shared site cannot be reached, so a shared limit
    cannot be honoured right now: raised when joining a site
    (:class:`throttlekit.redis.RedisSite`) and by site-wide limits that never grant
    blindly (a request limiter's acquire). Shared bandwidth limits do not raise it: they
    fall back and recover by themselves. The Redis error is chained as ``__cause__``.
    """


class UnitError(ThrottlekitError, ValueError):
    """Text that is not a valid rate or size; the message quotes it and lists what is accepted."""


class ItemBlockError(ExceptionGroup[Exception], ThrottlekitError):
    """
    Failures of a run or of one block: an :class:`ExceptionGroup` (handle it with
    ``except*``), never collapsed to a bare exception, even for a single failure.

    The run's group holds one group per failed block ("One or more items in block X
    failed: ..."), whose members are the items' exceptions and, for an item whose
    additional items failed, a group "One or more additional items for X failed: a; b".
    ``block`` is the block's name (``None`` for the run's group).
    """

    block: str | None

    def __new__(
        cls, message: str, exceptions: Sequence[Exception], *, block: str | None = None
    ) -> ItemBlockError:
        self = super().__new__(cls, message, exceptions)
        self.block = block
        return self

    def __init__(
        self, message: str, exceptions: Sequence[Exception], *, block: str | None = None
    ) -> None:
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> ItemBlockError:  # type: ignore[override]
        return ItemBlockError(self.message, excs, block=self.block)


class CallbackWarning(ThrottlekitError, RuntimeWarning):
    """
    A callback you gave throttlekit raised an :class:`Exception`, and the work went on.

    Callbacks that only observe (``on_progress``, ``on_error``, a worker count chosen
    for :meth:`ItemBlockWorkerPool.follow`, a :class:`PolicyWatcher`'s ``on_error`` and
    subscribers) must not stop a run, so what they raise is
    not raised into the run; it is not left in a log nobody reads either. It is issued
    as this warning (``warnings.warn``), which Python prints on stderr without any
    logging set up; its message names the callback and what it raised, and the
    exception itself is kept as the warning's ``__cause__``. Turn it into an error in tests with
    ``warnings.simplefilter("error", CallbackWarning)`` (or pytest's
    ``-W error::throttlekit.CallbackWarning``), or silence it the same way.

    It is a :class:`RuntimeWarning` and, like everything throttlekit issues on purpose,
    a :class:`ThrottlekitError`.
    """


class PolicyRejectedWarning(ThrottlekitError, RuntimeWarning):
    """
    A :class:`PolicyWatcher` rejected a changed policy file and kept the last good policy.

    A broken edit of a watched ConfigMap must not stop the system, so the watcher goes on
    with the policy it had; but an edit that silently never takes effect is a trap. Unless
    you passed ``on_error=`` (then the rejection is yours to report), the watcher issues
    this warning (``warnings.warn``), which Python prints on stderr without any logging
    set up. Its message names the file and every problem; the :class:`ConfigError` is
    kept as the warning's ``__cause__``. Silence it, or turn it into an error, with a
    warnings filter on this class.

    It is a :class:`RuntimeWarning` and, like everything throttlekit issues on purpose,
    a :class:`ThrottlekitError`.
    """
