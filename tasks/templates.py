"""Render tenant email templates: ``{{ Candidate Name }}`` placeholders, sandboxed Jinja2.

Templates come from the CRM auth service and are written by tenants, so they are untrusted
code: they run in Jinja2's immutable sandbox, a missing key is an error rather than an empty
string, and the obvious ways to blow up memory (huge repeats, widths, replacements) are refused.
"""

from __future__ import annotations

import functools
import keyword
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import jinja2
from jinja2 import StrictUndefined
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

__all__ = [
    "MAX_RENDERED_CHARS",
    "EmailTemplate",
    "RenderedEmail",
    "TemplateError",
    "html_to_text",
    "render_email",
]

#: Upper bound for each rendered part (subject, html, text), in characters.
MAX_RENDERED_CHARS = 1_000_000
#: How deep nested lists/dicts in a context may go (also stops self-referencing values).
MAX_CONTEXT_DEPTH = 20
#: The name under which placeholders that are not identifiers read the context.
CONTEXT_NAME = "__ctx"


@dataclass(frozen=True, slots=True)
class EmailTemplate:
    """A template as the auth service serves it; ``text`` is derived from ``html`` if absent."""

    subject: str
    html: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """The three parts of a ready-to-send email."""

    subject: str
    html: str
    text: str


class TemplateError(Exception):
    """The email can never be sent with this template and context; ``str()`` says why."""


def render_email(
    template: EmailTemplate,
    context: Mapping[str, Any],
    *,
    subject_override: str | None = None,
) -> RenderedEmail:
    """Fill ``template`` from ``context``; raise :class:`TemplateError` if that cannot work."""
    values = _plain_context(context)
    subject_source = template.subject if subject_override is None else subject_override
    # A subject is one header line: line breaks from the template or a value are folded.
    subject = " ".join(_render(subject_source, values, part="subject", html=False).split())
    html = _render(template.html, values, part="html", html=True)
    if template.text is not None and template.text.strip():
        text = _render(template.text, values, part="text", html=False)
    else:
        text = html_to_text(html)
        if len(text) > MAX_RENDERED_CHARS:
            raise TemplateError(f"rendered text is larger than {MAX_RENDERED_CHARS} characters")
    return RenderedEmail(subject=subject, html=html, text=text)


# --- placeholders -------------------------------------------------------------------------

# One pass over the source: raw blocks, comments and statements are copied untouched, only
# ``{{ ... }}`` expressions are looked at. ``-``/``+`` whitespace control is kept.
_SOURCE_PARTS = re.compile(
    r"(?P<raw>\{%[-+]?\s*raw\s*[-+]?%\}.*?\{%[-+]?\s*endraw\s*[-+]?%\})"
    r"|(?P<comment>\{#.*?#\})"
    r"|(?P<block>\{%.*?%\})"
    r"|\{\{(?P<lead>[-+]?)(?P<body>.*?)(?P<trail>[-+]?)\}\}",
    re.DOTALL,
)
# A CRM field name: words joined by spaces, or by ``-``, ``'``, a typographic apostrophe,
# ``/`` or ``&`` without spaces ("Candidate Name", "first-name", "Candidate's Job",
# "R&D Team", "Address Line 2"). A spaced ``-`` ("total - discount") stays arithmetic.
# No line breaks inside a name, so the rewrite keeps line numbers for error messages.
_FIELD_NAME = re.compile(r"[^\W\d]\w*(?:(?:[ \t]+|[-'\u2019/&])\w+)*")
_JOINED_BY_PUNCTUATION = re.compile(r"\w[-'\u2019/&]\w")
_jinja_parser = jinja2.Environment(autoescape=True)  # only ever parses, never renders


def _rewrite_placeholders(source: str) -> str:
    """Turn ``{{ Candidate Name | upper }}`` into ``{{ __ctx['Candidate Name'] | upper }}``."""
    return _SOURCE_PARTS.sub(_rewrite_match, source)


def _rewrite_match(match: re.Match[str]) -> str:
    body = match.group("body")
    if body is None:  # raw block, comment or statement
        return match.group(0)
    head, bar, filters = body.partition("|")
    name = head.strip()
    if not _is_field_name(name):
        return match.group(0)
    leading = head[: len(head) - len(head.lstrip())]
    trailing = head[len(head.rstrip()) :]
    lookup = f"{CONTEXT_NAME}[{name!r}]"
    inner = f"{leading}{lookup}{trailing}{bar}{filters}"
    return f"{{{{{match.group('lead')}{inner}{match.group('trail')}}}}}"


def _is_field_name(name: str) -> bool:
    if not _FIELD_NAME.fullmatch(name) or name.isidentifier():
        return False
    if _JOINED_BY_PUNCTUATION.search(name):
        return True
    # Only spaces between words: "Candidate Name" is a field, but "x if y else z" or
    # "not done" are Jinja expressions and stay so (Jinja can parse them, it cannot parse
    # two names side by side).
    if not any(keyword.iskeyword(word) for word in name.split()):
        return True
    try:
        _jinja_parser.parse(f"{{{{ {name} }}}}")
    except jinja2.TemplateSyntaxError:
        return True
    return False


# --- the sandbox ----------------------------------------------------------------------------


class _Context(dict[str, Any]):
    """The context as seen by ``__ctx[...]`` (a type of its own so lookups can be told apart)."""


class _Undefined(StrictUndefined):
    """StrictUndefined whose message names the missing context key plainly."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if (
            not self._undefined_hint
            and self._undefined_obj is missing
            and isinstance(self._undefined_name, str)
        ):
            return f"missing context key {self._undefined_name!r}"
        message: str = super()._undefined_message
        return message


def _too_big(what: str) -> SecurityError:
    return SecurityError(f"{what} would be larger than {MAX_RENDERED_CHARS} characters")


def _check_size(size: Any, what: str) -> None:
    """A width or count above the output bound can only be an attack."""
    if isinstance(size, int | float) and abs(size) > MAX_RENDERED_CHARS:
        raise _too_big(what)


def _first(args: tuple[Any, ...], kwargs: dict[str, Any], name: str, default: Any = 0) -> Any:
    """The first argument of a call, whether given by position or by ``name``."""
    return args[0] if args else kwargs.get(name, default)


def _check_replace(value: Any, old: Any, new: Any, count: Any = -1) -> None:
    text, old_s, new_s = str(value), str(old), str(new)
    hits = text.count(old_s) if old_s else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    if len(text) + hits * max(0, len(new_s) - len(old_s)) > MAX_RENDERED_CHARS:
        raise _too_big("replace()")


def _check_join(separator: Any, items: list[Any]) -> None:
    size = len(str(separator)) * max(0, len(items) - 1)
    for item in items:
        size += len(item) if isinstance(item, str) else 1
        if size > MAX_RENDERED_CHARS:
            raise _too_big("join()")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent_format(fmt: str) -> None:
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_RENDERED_CHARS):
                raise _too_big("% formatting")


def _check_str_format(fmt: str) -> None:
    # Values themselves are harmless (an amount of 2,000,000 is fine); only widths and
    # precisions make output, and a nested "{:{}}" width could come from a value.
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format itself will raise the same error
    for _literal, _field, spec, _conversion in fields:
        if spec and "{" in spec:
            raise SecurityError("nested fields in a format spec are not allowed")
        for number in re.findall(r"\d+", spec or ""):
            if int(number) > MAX_RENDERED_CHARS:
                raise _too_big("format()")


# str methods that grow their result from a number or a replacement.
_STR_METHOD_CHECKS: dict[str, Callable[..., None]] = {
    "center": lambda s, *a, **k: _check_size(_first(a, k, "width"), "center()"),
    "ljust": lambda s, *a, **k: _check_size(_first(a, k, "width"), "ljust()"),
    "rjust": lambda s, *a, **k: _check_size(_first(a, k, "width"), "rjust()"),
    "zfill": lambda s, *a, **k: _check_size(_first(a, k, "width"), "zfill()"),
    "expandtabs": lambda s, *a, **k: _check_size(
        _first(a, k, "tabsize", 8) * s.count("\t"), "expandtabs()"
    ),
    "replace": _check_replace,
}


def _guard_filter(fn: Callable[..., Any], check: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a built-in filter with a size check; ``wraps`` keeps its ``pass_*`` marker."""

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        # Some filters get Jinja's eval context first; the checks only look at the rest.
        offset = 1 if args and isinstance(args[0], EvalContext) else 0
        value = check(args[offset], *args[offset + 1 :], **kwargs)
        return fn(*args[:offset], value, *args[offset + 1 :], **kwargs)

    return guarded


def _join_filter_check(value: Any, d: Any = "", attribute: Any = None) -> Any:
    items = list(value)  # the value may be a generator: check and pass on the same items
    if attribute is None:
        _check_join(d, items)
    return items


def _indent_check(value: Any, width: Any = 4, *_: Any, **__: Any) -> Any:
    per_line = len(width) if isinstance(width, str) else width
    _check_size(per_line * (str(value).count("\n") + 1), "indent()")
    return value


def _format_check(value: Any, *_: Any, **__: Any) -> Any:
    _check_percent_format(str(value))
    return value


def _replace_check(value: Any, *args: Any, **kwargs: Any) -> Any:
    _check_replace(value, *args, **kwargs)
    return value


def _size_check(name: str, what: str) -> Callable[..., Any]:
    def check(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_size(_first(args, kwargs, name), what)
        return value

    return check


_FILTER_CHECKS: dict[str, Callable[..., Any]] = {
    "center": _size_check("width", "center()"),
    "indent": _indent_check,
    "format": _format_check,
    "replace": _replace_check,
    "join": _join_filter_check,
    "batch": _size_check("linecount", "batch()"),
    "slice": _size_check("slices", "slice()"),
}


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus size checks on the operations that multiply output."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *, html: bool) -> None:
        super().__init__(
            autoescape=html,
            undefined=_Undefined,
            # A CRM field that is null reads as empty, not as the word "None".
            finalize=lambda value: "" if value is None else value,
            keep_trailing_newline=True,
        )
        # lipsum(n) builds n paragraphs in memory; nothing in an email needs it.
        self.globals.pop("lipsum", None)
        for name, check in _FILTER_CHECKS.items():
            self.filters[name] = _guard_filter(self.filters[name], check)

    def getitem(self, obj: Any, argument: Any) -> Any:
        # __ctx["Candidate Name"]: a missing key must name the key, not "dict has no attribute".
        if isinstance(obj, _Context):
            if argument in obj:
                return obj[argument]
            return self.undefined(name=argument)
        return super().getitem(obj, argument)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_RENDERED_CHARS
                ):
                    raise _too_big("repetition")
        elif operator == "**":
            # An integer power of millions of bits computes for minutes; floats just overflow.
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() * right > 1_000_000
            ):
                raise SecurityError("integer powers above a million bits are not allowed")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name == "join":
                items = list(args[0]) if args else []
                _check_join(owner, items)
                args = (items,)
            elif name in _STR_METHOD_CHECKS:
                _STR_METHOD_CHECKS[name](owner, *args, **kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_str_format(fmt)
            return wrapped(*args, **kwargs)

        return checked


_ENVIRONMENTS = {True: _Sandbox(html=True), False: _Sandbox(html=False)}


@functools.lru_cache(maxsize=512)
def _compile(source: str, html: bool) -> jinja2.Template:
    """Compiled templates by source: the same template renders for every recipient."""
    return _ENVIRONMENTS[html].from_string(_rewrite_placeholders(source))


def _render(source: str, values: dict[str, Any], *, part: str, html: bool) -> str:
    try:
        template = _compile(source, html)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"template syntax error in {part} at line {exc.lineno}: {exc.message}"
        ) from None
    variables = dict(values)
    variables[CONTEXT_NAME] = _Context(values)
    chunks: list[str] = []
    size = 0
    try:
        # Streaming, so a runaway loop stops at the bound instead of at memory exhaustion.
        for chunk in template.generate(variables):
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise TemplateError(
                    f"rendered {part} is larger than {MAX_RENDERED_CHARS} characters"
                )
            chunks.append(chunk)
    except TemplateError:
        raise
    except jinja2.UndefinedError as exc:
        raise TemplateError(str(exc)) from None
    except SecurityError as exc:
        raise TemplateError(f"template not allowed in {part}: {exc}") from None
    except Exception as exc:
        # Division by zero, a filter given the wrong type, recursion...: the same template
        # and context fail the same way every time, so this is permanent too.
        raise TemplateError(f"template error in {part}: {type(exc).__name__}: {exc}") from None
    return "".join(chunks)


# --- context values -------------------------------------------------------------------------


def _plain_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """Copy the context down to str/int/float/bool/None/list/dict; anything else becomes str."""
    return {_safe_str(key): _plain(value, 1) for key, value in context.items()}


def _plain(value: Any, depth: int) -> Any:
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, int):  # IntEnum and friends: the number, not the enum's str()
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping | list | tuple) and depth >= MAX_CONTEXT_DEPTH:
        raise TemplateError(f"context is nested deeper than {MAX_CONTEXT_DEPTH} levels")
    if isinstance(value, Mapping):
        return {_safe_str(key): _plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, depth + 1) for item in value]
    return _safe_str(value)


def _safe_str(value: Any) -> str:
    # str() of a str subclass (markupsafe.Markup included) is a plain str: a value can never
    # arrive pre-marked as safe HTML and skip escaping.
    try:
        text = str(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if type(text) is str else str.__str__(text)


# --- html to text ---------------------------------------------------------------------------

_LINE_TAGS = frozenset(
    {"div", "li", "tr", "ul", "ol", "table", "section", "article", "header", "footer", "hr"}
)
_PARAGRAPH_TAGS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"})
_HIDDEN_TAGS = frozenset({"head", "script", "style", "title", "template"})
_CELL_TAGS = frozenset({"td", "th"})
_EMPTY_TAGS = frozenset({"br", "hr", "img"})
# Markers that survive whitespace collapsing: a hard break (<br>, a newline inside <pre>) and
# soft breaks at block edges, which merge so "</li><li>" or "</p><p>" do not stack up.
_HARD_BREAK = "\x00"
_LINE_BREAK = "\x01"
_PARAGRAPH_BREAK = "\x02"
_SOFT_BREAKS = (_LINE_BREAK, _PARAGRAPH_BREAK)


class _TextExtractor(HTMLParser):
    """Collects text and break markers from HTML; entities are decoded by the parser."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._links: list[tuple[str, int]] = []

    def _soft_break(self, marker: str) -> None:
        if self.out and self.out[-1] in _SOFT_BREAKS:
            self.out[-1] = max(self.out[-1], marker)
        else:
            self.out.append(marker)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden += 1
        elif tag == "br":
            self.out.append(_HARD_BREAK)
        elif tag in _PARAGRAPH_TAGS:
            self._soft_break(_PARAGRAPH_BREAK)
            if tag == "pre":
                self._pre += 1
        elif tag in _LINE_TAGS:
            self._soft_break(_LINE_BREAK)
            if tag == "li":
                self.out.append("- ")
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", len(self.out)))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(alt)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/>, <img/>: no end tag follows; a self-closed <a/> or <script/> must not stay open.
        if tag in _EMPTY_TAGS:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _PARAGRAPH_TAGS:
            self._soft_break(_PARAGRAPH_BREAK)
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
        elif tag in _LINE_TAGS:
            self._soft_break(_LINE_BREAK)
        elif tag in _CELL_TAGS:
            self.out.append(" ")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            label = " ".join(_SPACES_ONLY.sub(" ", "".join(self.out[start:])).split())
            if _show_link(href, label):
                self.out.append(f" ({href})" if label else href)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if self._pre:
            self.out.append(data.replace("\n", _HARD_BREAK))
        elif data.strip() or not (self.out and self.out[-1] in _SOFT_BREAKS):
            # Whitespace right after a block edge is layout, and would keep breaks from merging.
            self.out.append(data)


_SPACES_ONLY = re.compile("[\x00\x01\x02]")


def _show_link(href: str, label: str) -> bool:
    href = href.strip()
    if not href or href.startswith("#") or href.lower().startswith("javascript:"):
        return False
    target = href.split(":", 1)[1] if href.lower().startswith(("mailto:", "tel:")) else href
    return label not in (href, target)


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML body: line breaks kept, links as "text (url)"."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    joined = (
        "".join(parser.out)
        .replace(_PARAGRAPH_BREAK, _HARD_BREAK * 2)
        .replace(_LINE_BREAK, _HARD_BREAK)
    )
    lines = [" ".join(line.split()) for line in joined.split(_HARD_BREAK)]
    # At most one blank line in a row; none at the start or the end.
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
