"""
Loading JSON configuration documents into attrs models, the way Go's ``encoding/json`` does.

Velero (and most Kubernetes tooling) decodes its ConfigMaps with Go's ``encoding/json``.
To read those documents *exactly* as Velero does, this module reproduces its rules:

* a value of the wrong JSON type is an error (``"3"`` is not a number, ``2.5`` and ``3.0``
  are not integers, integers must fit in 64 bits);
* ``null`` means "not set" (a null inside a list of objects is an empty object);
* object keys match field names exactly *or case-insensitively* (``globalconfig`` does set
  ``globalConfig`` in Go); we accept the value but warn, since other tools do not;
* unknown keys are ignored; we keep them (so documents round-trip without loss) and warn,
  suggesting the likely intended key.

The conversion is done by a cattrs converter with detailed validation, so *every*
structural problem is collected, each with a JSONPath-like location such as
``loadConcurrency.perNodeConfig[1].number``.

Before any of that, a document must be JSON data at all, and the checks here make sure
that *any* input, however odd, ends as a :class:`ConfigError` and never as another
exception: nesting deeper than :data:`MAX_DEPTH` (in text or in an already-decoded
mapping, cycles included), ``NaN``/``Infinity`` tokens, numbers no 64-bit value can hold
(``1e400``, a 5,000-digit integer), values that are not JSON at all (a ``set``, an
``object()``), invalid UTF-8. Duplicate keys are not errors (the last one wins, as in Go)
but are reported as notes, like unknown keys.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import ClassValidationError, IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .._errors import ConfigError, ConfigProblem

__all__ = [
    "MAX_DEPTH",
    "MAX_LISTED",
    "JsonModel",
    "decode_json_text",
    "describe",
    "internal_field",
    "json_field",
    "key_path",
    "key_problems",
    "load_json_document",
    "parse_json_text",
    "read_json_document",
    "structure",
    "unstructure",
]

T = TypeVar("T")

_JSON_NAME: Final = "throttlekit.json_name"
_INTERNAL: Final = "throttlekit.internal"
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

#: How deeply objects and lists may nest in a document (the top-level object is level 1).
#: Velero's own sections need six levels; the limit keeps decoding, comparing and writing
#: a document back far from Python's recursion limit, whatever the caller's stack depth
#: (Go's ``encoding/json`` has a limit too, 10,000).
MAX_DEPTH: Final = 100
#: A JSON number must fit in a 64-bit float (what Go reads an untyped number into); an
#: integer of more bits is refused, whatever Python could hold.
_MAX_INT_BITS: Final = 1024
#: Integer literals longer than this are refused before Python converts them (the
#: conversion is quadratic, and refused past 4,300 digits from Python 3.11 on).
_MAX_INT_DIGITS: Final = 400
#: At most this many "not JSON data" problems are listed; the rest are counted.
MAX_LISTED: Final = 100


def json_field(name: str, **kwargs: Any) -> Any:
    """An optional model field that is spelled ``name`` in JSON (``None`` = not set)."""
    return attrs.field(default=None, metadata={_JSON_NAME: name}, **kwargs)


@attrs.frozen(kw_only=True)
class JsonModel:
    """
    Base of the models read from JSON documents.

    ``extra`` keeps the keys a model does not know, so a document round-trips without
    loss; ``spelled`` remembers keys matched only case-insensitively (as Go does), so they
    are written back as they were and can be warned about.
    """

    #: The keys the model does not know, with their values, so a document round-trips
    #: without loss.
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)
    #: Keys matched only case-insensitively (as Go does): the model's name to the key as
    #: written, so they are written back as they were and can be warned about.
    spelled: dict[str, str] = attrs.field(factory=dict, repr=False, eq=False)


def internal_field(**kwargs: Any) -> Any:
    """A model field that is not part of the JSON document (left out both ways)."""
    return attrs.field(metadata={_INTERNAL: True}, eq=False, repr=False, **kwargs)


def _internal_names(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls) if f.metadata.get(_INTERNAL)]


def _is_model(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, JsonModel)


def _json_names(cls: type) -> dict[str, str]:
    """Attribute name -> JSON name for a model class."""
    return {f.name: f.metadata[_JSON_NAME] for f in attrs.fields(cls) if _JSON_NAME in f.metadata}


# -- describing values in messages ---------------------------------------------------


def describe(value: object) -> str:
    """A short, human description of a JSON value for error messages (never raises)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, int):
        if value.bit_length() > 128:  # str() of a huge int is slow, and refused past 4,300 digits
            return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
        return f"the integer {int(value)}"
    if isinstance(value, float):
        return f"the number {float(value)!r}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a value of type {type(value).__name__}"


# -- strict scalar hooks (Go semantics) ----------------------------------------------


def _structure_int(value: object, _: type) -> int:
    if value is None:  # Go: null leaves the zero value
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {describe(value)}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{describe(value)} does not fit in 64 bits")
    return value


def _structure_str(value: object, _: type) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {describe(value)}")
    return value


def _structure_bool(value: object, _: type) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {describe(value)}")
    return value


# -- containers: check the JSON shape before iterating -------------------------------


def _add_note(exc: BaseException, note: str) -> None:
    # BaseException.add_note() is 3.11+; cattrs reads __notes__ on every version.
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined,unused-ignore]


def _origin(t: Any) -> object:
    return get_origin(t)


def _structure_items(
    items: Iterable[tuple[Any, Any]], handler: Callable[[Any, Any], Any], elem: Any, t: Any
) -> list[tuple[Any, Any]]:
    """Structure each (index or key, value), collecting every failure with its position."""
    out: list[tuple[Any, Any]] = []
    errors: list[Exception] = []
    for where, item in items:
        try:
            out.append((where, handler(item, elem)))
        except Exception as exc:
            _add_note(exc, IterableValidationNote(f"Structuring {t} @ {where!r}", where, elem))
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {t}", errors, t)
    return out


def _tuple_hook(conv: cattrs.Converter, t: Any) -> Callable[[Any, Any], tuple[Any, ...]]:
    (elem, _ellipsis) = get_args(t)
    handler = conv.get_structure_hook(elem)

    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {describe(value)}")
        return tuple(item for _, item in _structure_items(enumerate(value), handler, elem, t))

    return structure


def _dict_hook(conv: cattrs.Converter, t: Any) -> Callable[[Any, Any], dict[str, Any]]:
    (_key, val) = get_args(t)
    handler = conv.get_structure_hook(val)

    def structure(value: Any, _: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {describe(value)}")
        return dict(_structure_items(value.items(), handler, val, t))

    return structure


# -- models: case-insensitive keys, extras kept ---------------------------------------


def _model_structure_hook(conv: cattrs.Converter, cls: type[T]) -> Callable[[Any, Any], T]:
    names = _json_names(cls)
    exact = set(names.values())
    folded = {name.lower(): name for name in exact}
    overrides = {attr: override(rename=name) for attr, name in names.items()}
    overrides["extra"] = override(rename="\0extra")
    overrides["spelled"] = override(rename="\0spelled")
    overrides.update((attr, override(omit=True)) for attr in _internal_names(cls))
    inner = make_dict_structure_fn(cls, conv, **overrides)  # type: ignore[arg-type]

    def structure(value: Any, _: Any) -> T:
        if value is None:  # Go: a null object is the zero value
            value = {}
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {describe(value)}")
        canonical: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for key, item in value.items():  # in document order: the last spelling wins, as in Go
            if key in exact:
                canonical[key] = item
                spelled.pop(key, None)
            elif isinstance(key, str) and key.lower() in folded:
                name = folded[key.lower()]
                canonical[name] = item
                spelled[name] = key
            else:
                extra[key] = item
        canonical["\0extra"] = extra
        canonical["\0spelled"] = spelled
        return inner(canonical, cls)

    return structure


def _model_unstructure_hook(
    conv: cattrs.Converter, cls: type[JsonModel]
) -> Callable[[JsonModel], Any]:
    names = _json_names(cls)
    overrides = {attr: override(rename=name, omit_if_default=True) for attr, name in names.items()}
    overrides["extra"] = override(omit=True)
    overrides["spelled"] = override(omit=True)
    overrides.update((attr, override(omit=True)) for attr in _internal_names(cls))
    inner = make_dict_unstructure_fn(cls, conv, **overrides)  # type: ignore[arg-type]

    def unstructure(obj: JsonModel) -> dict[str, Any]:
        out: dict[str, Any] = inner(obj)
        if obj.spelled:
            out = {obj.spelled.get(k, k): v for k, v in out.items()}
        out.update(obj.extra)
        return out

    return unstructure


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook_factory(
        lambda t: _origin(t) is tuple, lambda t: _tuple_hook(conv, t)
    )
    conv.register_structure_hook_factory(
        lambda t: _origin(t) is dict, lambda t: _dict_hook(conv, t)
    )
    conv.register_structure_hook_factory(_is_model, lambda cls: _model_structure_hook(conv, cls))
    conv.register_unstructure_hook_factory(
        _is_model, lambda cls: _model_unstructure_hook(conv, cls)
    )
    conv.register_unstructure_hook_factory(
        lambda t: _origin(t) is tuple or t is tuple,
        lambda t: lambda v: [conv.unstructure(x) for x in v],
    )
    return conv


_CONVERTER: Final = _make_converter()


def structure(data: Any, cls: type[T]) -> T:
    """
    Convert decoded JSON into the model ``cls``.

    Raises :class:`ConfigError` with one :class:`ConfigProblem` per structural problem.
    """
    try:
        return _CONVERTER.structure(data, cls)
    except (ClassValidationError, IterableValidationError) as group:
        raise ConfigError(list(_problems_from(group, ""))) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError([ConfigProblem(path="", message=str(exc))]) from None


def unstructure(obj: Any) -> Any:
    """The JSON-ready form of a model (plain dicts, lists and scalars)."""
    return _CONVERTER.unstructure(obj)


def _join(path: str, segment: str) -> str:
    if segment.startswith("["):
        return path + segment
    return f"{path}.{segment}" if path else segment


_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _index_segment(where: object) -> str:
    """``[3]`` for a list index, ``["fast-storage"]`` for a map key."""
    return f"[{where}]" if isinstance(where, int) else f"[{json.dumps(where)}]"


def _key_segment(key: object) -> str:
    """A schema key: ``globalConfig``, or bracketed when it is not an identifier."""
    if isinstance(key, str) and _IDENTIFIER.fullmatch(key):
        return key
    return _index_segment(key)


def _problems_from(exc: BaseException, path: str) -> Iterator[ConfigProblem]:
    """Flatten a cattrs error tree into problems with JSON paths."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", []):
                if hasattr(note, "name") and isinstance(exc, ClassValidationError):
                    json_name = _json_names(exc.cl).get(note.name, note.name)
                    sub_path = _join(path, json_name)
                elif isinstance(note, IterableValidationNote):
                    sub_path = path + _index_segment(note.index)
            yield from _problems_from(sub, sub_path)
        return
    yield ConfigProblem(path=path, message=str(exc))


# -- key warnings --------------------------------------------------------------------


def key_problems(obj: Any, path: str = "") -> Iterator[ConfigProblem]:
    """
    Warnings for keys a model did not know (kept in ``extra``) or that matched only
    case-insensitively, walking the whole model tree: each object's known fields in
    order, then its unknown keys.
    """
    if isinstance(obj, tuple | list):
        for i, item in enumerate(obj):
            yield from key_problems(item, f"{path}[{i}]")
        return
    if isinstance(obj, dict):
        for key, item in obj.items():
            yield from key_problems(item, path + _index_segment(key))
        return
    if not _is_model(type(obj)):
        return
    names = _json_names(type(obj))
    valid = list(names.values())
    for attr, name in names.items():
        spelled = obj.spelled.get(name)
        where = _join(path, _key_segment(spelled or name))
        if spelled is not None:
            yield ConfigProblem(
                path=where,
                message=(
                    f"not the documented spelling; did you mean {name}? (Velero matches "
                    "keys case-insensitively and uses this value, but other tools may not)"
                ),
            )
        yield from key_problems(getattr(obj, attr), where)
    for key in obj.extra:
        yield ConfigProblem(path=_join(path, _key_segment(key)), message=_unknown_key(key, valid))


def _unknown_key(key: object, valid: list[str]) -> str:
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    if close:
        return f"unknown key, ignored as Velero ignores it; did you mean {close[0]}?"
    return f"unknown key, ignored as Velero ignores it (known keys here: {', '.join(valid)})"


# -- reading documents ----------------------------------------------------------------


def _error(path: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(path=path, message=message)])


@attrs.frozen
class _NotJson:
    """Stands in for a token that decodes but is not JSON data (NaN, 1e400), until the
    check of the decoded tree reports it with its path."""

    message: str


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _parse_constant(name: str) -> _NotJson:
    return _NotJson(f"{name} is not valid JSON (JSON has no NaN or infinities)")


def _parse_float(text: str) -> float | _NotJson:
    value = float(text)
    if math.isfinite(value):
        return value
    return _NotJson(f"the number {_shorten(text)} is out of range (no 64-bit number holds it)")


def _parse_int(text: str) -> int | _NotJson:
    digits = len(text.lstrip("-"))
    if digits > _MAX_INT_DIGITS:
        return _NotJson(
            f"an integer of {digits} digits is out of range (no 64-bit number holds it)"
        )
    return int(text)


# Strings are skipped (a bracket inside one does not nest); this is exactly how a JSON
# reader pairs quotes, up to the first syntax error, which json.loads reports anyway.
_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STRING_OR_BRACKET: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_BRACKET: Final = re.compile(r"[\[\]{}]")
_NESTING_STEP: Final = {"[": 1, "{": 1, "]": -1, "}": -1}
_UTF8_BOM: Final = b"\xef\xbb\xbf"


def _too_deep_at(text: str) -> int | None:
    """The offset of the first bracket nested deeper than MAX_DEPTH in ``text``, or None."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None  # the usual case: too few brackets to nest that deep
    brackets = _BRACKET.findall(_STRING.sub("", text))
    if max(itertools.accumulate(map(_NESTING_STEP.__getitem__, brackets)), default=0) <= MAX_DEPTH:
        return None
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):  # stops at the offending bracket
        depth += _NESTING_STEP.get(match.group(), 0)
        if depth > MAX_DEPTH:
            return match.start()
    return None  # pragma: no cover - the count above found one


def _line_column(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    return f"line {line}, column {offset - text.rfind(chr(10), 0, offset)}"


def decode_json_text(
    text: str | bytes | bytearray | memoryview, *, where: str = ""
) -> tuple[Any, tuple[ConfigProblem, ...]]:
    """
    Decode JSON text the strict way, as Go does, and check that it is JSON data.

    Returns the decoded value and *notes*: duplicate keys (the last one wins, as in Go),
    with their paths. Everything else that is wrong raises :class:`ConfigError`: not
    UTF-8, not JSON, ``NaN``/``Infinity``, numbers out of range, nesting deeper than
    :data:`MAX_DEPTH`. A leading byte-order mark is skipped, in text as in bytes. ``where``
    prefixes the path of problems that concern the text as a whole (syntax, encoding);
    problems inside the document have paths relative to it.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        data = bytes(text)
        bom = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
        try:
            text = data[bom:].decode("utf-8")
        except UnicodeDecodeError as exc:
            message = f"not UTF-8 text ({exc.reason} at byte {bom + exc.start})"
            raise _error(where, message) from None
    text = text.removeprefix("\ufeff")
    deep = _too_deep_at(text)
    if deep is not None:
        message = f"nested deeper than {MAX_DEPTH} levels ({_line_column(text, deep)})"
        raise _error(where, message)
    duplicates: dict[int, list[Any]] = {}

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) < len(items):
            seen: set[str] = set()
            repeated = [k for k, _ in items if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
            duplicates[id(obj)] = list(dict.fromkeys(repeated))
        return obj

    try:
        value = json.loads(
            text,
            parse_constant=_parse_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
            object_pairs_hook=pairs,
        )
    except json.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise _error(where, message) from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps the decoder shallow
        raise _error(where, "nested too deeply to decode") from None
    notes = _check_json_data(value, duplicates)
    return value, notes


def parse_json_text(text: str | bytes | bytearray | memoryview, *, where: str = "") -> Any:
    """Decode JSON text the strict way (see :func:`decode_json_text`), without the notes."""
    return decode_json_text(text, where=where)[0]


def key_path(path: str, key: object) -> str:
    """``path.key``, or ``path["odd key"]`` / ``path[7]``, or a short repr for non-JSON keys."""
    if isinstance(key, str):
        return _join(path, _key_segment(key))
    if isinstance(key, int) and not isinstance(key, bool):
        return path + _index_segment(key)
    return f"{path}[{_shorten(repr(key))}]"


_ROOT: Final = object()  # the key of the document itself in _check_json_data's stack


def _check_json_data(
    root: object, duplicates: Mapping[int, list[Any]] | None = None
) -> tuple[ConfigProblem, ...]:
    """
    Check that ``root`` is JSON data: objects with string keys (or integer keys, which a
    mapping built in Python may carry and JSON writes as strings), lists, strings, finite
    numbers that fit in 64 bits, booleans and null, nested at most :data:`MAX_DEPTH` deep.

    Raises :class:`ConfigError` listing every problem (the first hundred) with its path;
    returns notes for duplicate keys, found by :func:`decode_json_text`. Iterative, so
    any depth and any cycle are fine.
    """
    problems: list[ConfigProblem] = []
    unlisted = 0
    notes: list[ConfigProblem] = []

    def problem(path: str, message: str) -> None:
        nonlocal unlisted
        if len(problems) < MAX_LISTED:
            problems.append(ConfigProblem(path=path, message=message))
        else:
            unlisted += 1

    # Each entry is (value, parent path, key, depth): a value's own path is only built when
    # it is needed (a container, a problem), since most values are strings that pass.
    stack: list[tuple[object, str, object, int]] = [(root, "", _ROOT, 0)]
    while stack:
        value, parent, key, depth = stack.pop()
        if value is None or isinstance(value, bool | str):
            continue
        path = parent if key is _ROOT else key_path(parent, key)
        if isinstance(value, int):
            if value.bit_length() > _MAX_INT_BITS:
                problem(path, f"{describe(value)} is out of range (no 64-bit number holds it)")
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                problem(
                    path, f"{describe(value)} is not valid JSON (JSON has no NaN or infinities)"
                )
            continue
        if isinstance(value, _NotJson):
            problem(path, value.message)
            continue
        if not isinstance(value, Mapping | list | tuple):
            problem(path, f"{describe(value)} is not JSON data")
            continue
        if depth >= MAX_DEPTH:
            problem(path, f"nested deeper than {MAX_DEPTH} levels")
            continue
        children: list[tuple[object, str, object, int]] = []
        if isinstance(value, Mapping):
            for child_key, item in value.items():
                if isinstance(child_key, bool) or not isinstance(child_key, str | int):
                    message = f"a key must be a string, got {type(child_key).__name__}"
                    problem(key_path(path, child_key), message)
                    continue
                children.append((item, path, child_key, depth + 1))
            if duplicates:
                for repeated in duplicates.get(id(value), ()):
                    notes.append(
                        ConfigProblem(
                            path=key_path(path, repeated),
                            message="duplicate key; the last value is used, as Velero does",
                        )
                    )
        else:  # an index, which key_path writes as [i]
            children.extend((item, path, i, depth + 1) for i, item in enumerate(value))
        stack.extend(reversed(children))  # depth first, in document order
    if unlisted:
        problems.append(ConfigProblem(path="", message=f"and {unlisted} more problems like these"))
    if problems:
        raise ConfigError(problems)
    return tuple(notes)


def _is_config_map(doc: Mapping[Any, Any]) -> bool:
    return doc.get("kind") == "ConfigMap" or ("apiVersion" in doc and "data" in doc)


def _config_map_payload(doc: Mapping[Any, Any]) -> tuple[Any, tuple[ConfigProblem, ...]]:
    """The decoded JSON inside a ConfigMap's single data key, as Velero reads it."""
    data = doc.get("data")
    if not isinstance(data, Mapping) or not data:
        raise _error("data", "the ConfigMap has no data; Velero expects one key holding the JSON")
    if len(data) > 1:
        keys = ", ".join(sorted(map(str, data)))
        raise _error(
            "data", f"the ConfigMap has {len(data)} keys ({keys}); Velero expects exactly one"
        )
    ((key, text),) = data.items()
    where = key_path("data", key)
    if not isinstance(text, str):
        raise _error(where, f"expected JSON text, got {describe(text)}")
    return decode_json_text(text, where=where)


def load_json_document(doc: Any) -> tuple[dict[str, Any], tuple[ConfigProblem, ...]]:
    """
    Turn what a user hands us into the decoded configuration object, and notes about it.

    ``doc`` may be the object itself (a mapping), JSON text, bytes, or a whole Kubernetes
    ConfigMap (as ``kubectl get cm NAME -o json`` prints it) whose ``data`` holds exactly
    one key with the JSON text, which is how Velero's node agent reads it.

    Anything that is not a usable JSON object raises :class:`ConfigError` (see
    :func:`decode_json_text` for text; a mapping gets the same checks of depth, numbers
    and value types), except an argument that is no kind of document at all (a ``set``,
    a file object), which is a :class:`TypeError`. The notes are duplicate keys.
    """
    notes: tuple[ConfigProblem, ...] = ()
    if isinstance(doc, str | bytes | bytearray | memoryview):
        doc, notes = decode_json_text(doc)
    elif isinstance(doc, Mapping):
        _check_json_data(doc)
    elif doc is not None and not isinstance(doc, bool | int | float | list | tuple):
        raise TypeError(
            "doc must be a mapping, JSON text or bytes (a node-agent configuration or a "
            f"whole ConfigMap), got {type(doc).__name__}"
        )
    if isinstance(doc, Mapping) and _is_config_map(doc):
        doc, notes = _config_map_payload(doc)
    if not isinstance(doc, Mapping):
        raise _error("", f"the configuration must be a JSON object, got {describe(doc)}")
    return dict(doc), notes


def read_json_document(doc: Any) -> dict[str, Any]:
    """:func:`load_json_document` without the notes."""
    return load_json_document(doc)[0]
