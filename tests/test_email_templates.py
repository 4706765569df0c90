"""render_email: CRM placeholders, escaping, the derived text part, errors and the sandbox."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from typing import Any

import pytest
from markupsafe import Markup

from tasks.templates import (
    MAX_RENDERED_CHARS,
    EmailTemplate,
    RenderedEmail,
    TemplateError,
    html_to_text,
    render_email,
)


def render(html: str, context: dict[str, Any] | None = None, **kw: Any) -> RenderedEmail:
    return render_email(
        EmailTemplate(subject=kw.pop("subject", "s"), html=html, **kw), context or {}
    )


def html_of(source: str, context: dict[str, Any] | None = None) -> str:
    return render(source, context).html


# --- placeholders -------------------------------------------------------------------------


def test_spaced_placeholders_are_filled_everywhere() -> None:
    template = EmailTemplate(
        subject="Interview for {{ Job Title }}",
        html="<p>Dear {{ Candidate Name }}, about {{Job Title}}</p>",
        text="Dear {{Candidate Name}}, about {{ Job Title }}",
    )
    rendered = render_email(template, {"Candidate Name": "Ann Lee", "Job Title": "Engineer"})
    assert rendered == RenderedEmail(
        subject="Interview for Engineer",
        html="<p>Dear Ann Lee, about Engineer</p>",
        text="Dear Ann Lee, about Engineer",
    )


def test_normal_placeholders_and_jinja_features_still_work() -> None:
    source = (
        "{{ first_name }} {{ user.email }} {{ items[1] }}"
        "{% if vip %} VIP{% endif %}{% for i in items %} {{ loop.index }}:{{ i }}{% endfor %}"
        " {{ x if vip else y }} {{ total - discount }}"
    )
    context = {
        "first_name": "Ann",
        "user": {"email": "ann@x.test"},
        "items": ["a", "b"],
        "vip": True,
        "x": "yes",
        "y": "no",
        "total": 10,
        "discount": 3,
    }
    assert html_of(source, context) == "Ann ann@x.test b VIP 1:a 2:b yes 7"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ first-name }}", "Ann"),
        ("{{ Candidate's Name }}", "Bo"),
        ("{{ R&D Team }}", "Lab"),
        ("{{ Address Line 2 }}", "Flat 3"),
        ("{{ Prénom Nom }}", "Zoé"),
        ("{{   Candidate  Name   }}", "Cy"),
    ],
)
def test_crm_style_field_names(source: str, expected: str) -> None:
    context = {
        "first-name": "Ann",
        "Candidate's Name": "Bo",
        "R&D Team": "Lab",
        "Address Line 2": "Flat 3",
        "Prénom Nom": "Zoé",
        "Candidate  Name": "Cy",
    }
    assert html_of(source, context) == expected


def test_filters_apply_to_spaced_placeholders() -> None:
    context = {"Candidate Name": "ann lee", "Job Title": "  dev  "}
    assert html_of("{{ Candidate Name | title }}", context) == "Ann Lee"
    assert html_of("{{Candidate Name|upper}}", context) == "ANN LEE"
    assert html_of("[{{ Job Title | trim | upper }}]", context) == "[DEV]"
    assert html_of("{{ Missing Field | default('there') }}", context) == "there"
    assert html_of("{{ Candidate Name | replace('ann', 'Bo') }}", context) == "Bo lee"


def test_whitespace_control_is_kept() -> None:
    assert html_of("a  {{- Candidate Name -}}  b", {"Candidate Name": "X"}) == "aXb"


def test_statements_comments_and_raw_blocks_are_not_rewritten() -> None:
    context = {"Candidate Name": "Ann", "show": True}
    source = (
        "{# {{ Candidate Name }} #}"
        "{% raw %}{{ Candidate Name }}{% endraw %}"
        "{% if show %}[{{ Candidate Name }}]{% endif %}"
    )
    assert html_of(source, context) == "{{ Candidate Name }}[Ann]"


def test_none_renders_empty() -> None:
    assert html_of("[{{ Middle Name }}]", {"Middle Name": None}) == "[]"


# --- escaping -------------------------------------------------------------------------------


def test_html_is_escaped_but_subject_and_text_are_not() -> None:
    template = EmailTemplate(
        subject="Hi {{ Candidate Name }}",
        html="<p>Hi {{ Candidate Name }}</p>",
        text="Hi {{ Candidate Name }}",
    )
    rendered = render_email(template, {"Candidate Name": "<script>x()</script> & Co"})
    assert rendered.html == "<p>Hi &lt;script&gt;x()&lt;/script&gt; &amp; Co</p>"
    assert rendered.subject == "Hi <script>x()</script> & Co"
    assert rendered.text == "Hi <script>x()</script> & Co"


def test_a_markup_value_is_still_escaped() -> None:
    # Values come from API callers: nothing in the context may bypass escaping.
    assert html_of("{{ name }}", {"name": Markup("<b>bold</b>")}) == "&lt;b&gt;bold&lt;/b&gt;"


def test_subject_is_one_line() -> None:
    rendered = render("h", {"Job Title": "Dev\r\nBcc: x@y.test"}, subject="New:\n{{ Job Title }}")
    assert rendered.subject == "New: Dev Bcc: x@y.test"


def test_subject_override_replaces_the_templates_and_has_placeholders() -> None:
    template = EmailTemplate(subject="Template subject", html="<p>x</p>")
    context = {"Candidate Name": "Ann"}
    rendered = render_email(template, context, subject_override="For {{ Candidate Name }}")
    assert rendered.subject == "For Ann"
    with pytest.raises(TemplateError, match="missing context key 'Nope'"):
        render_email(template, context, subject_override="{{ Nope }}")


# --- the text part --------------------------------------------------------------------------


def test_text_part_is_derived_from_html_when_absent() -> None:
    html = (
        "<html><head><title>T</title><style>p { color: red }</style></head><body>"
        "<h1>Welcome, {{ Candidate Name }}</h1>\n"
        "<p>Your   application for <b>{{ Job Title }}</b> &amp; more.<br>Next line</p>\n"
        "<ul>\n  <li>One</li>\n  <li>Two</li>\n</ul>\n"
        '<div>See <a href="https://jobs.test/a?x=1&amp;y=2">the offer</a>.</div>'
        '<div>Mail <a href="mailto:hr@x.test">hr@x.test</a> or '
        '<a href="https://jobs.test">https://jobs.test</a></div>'
        "<script>alert(1)</script><p>Bye&nbsp;now</p></body></html>"
    )
    rendered = render(html, {"Candidate Name": "Ann <Lee>", "Job Title": "R&D"})
    assert rendered.text == (
        "Welcome, Ann <Lee>\n"
        "\n"
        "Your application for R&D & more.\n"
        "Next line\n"
        "\n"
        "- One\n"
        "- Two\n"
        "See the offer (https://jobs.test/a?x=1&y=2).\n"
        "Mail hr@x.test or https://jobs.test\n"
        "\n"
        "Bye now"
    )


@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_blank_text_counts_as_absent(text: str | None) -> None:
    assert render("<p>a</p><p>b</p>", text=text).text == "a\n\nb"


def test_html_to_text_edge_cases() -> None:
    assert html_to_text("") == ""
    assert html_to_text("plain &lt;text&gt;") == "plain <text>"
    assert html_to_text("a<br><br>b") == "a\n\nb"
    assert html_to_text("<p>a</p><br><br><br><br><p>b</p>") == "a\n\nb"
    assert html_to_text('<a href="https://x.test"><img src="i.png" alt="Logo"></a>') == (
        "Logo (https://x.test)"
    )
    assert html_to_text('<a href="https://x.test"><img src="i.png"></a>') == "https://x.test"
    assert html_to_text('<a href="#top">Top</a>') == "Top"
    assert html_to_text("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>") == (
        "a b\nc"
    )
    assert html_to_text("<pre>x\n  y</pre>") == "x\ny"
    assert html_to_text("<p>unclosed <b>tags") == "unclosed tags"


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "key"),
    [
        ("Hi {{ Candidate Name }}", "Candidate Name"),
        ("Hi {{ first_name }}", "first_name"),
        ("{{ Candidate Name | upper }}", "Candidate Name"),
        ("{% if x %}{{ Job Title }}{% endif %}", "Job Title"),
    ],
)
def test_missing_key_names_the_key(source: str, key: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(source, {"x": True})
    assert str(caught.value) == f"missing context key {key!r}"


@pytest.mark.parametrize("part", ["subject", "text"])
def test_missing_key_in_subject_or_text(part: str) -> None:
    fields = {"subject": "s", "html": "h", "text": "t", part: "{{ Job Title }}"}
    template = EmailTemplate(**fields)
    with pytest.raises(TemplateError, match="missing context key 'Job Title'"):
        render_email(template, {})


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("line 1\nline 2\n{% if x %}never closed", 3),
        ("{{ Candidate Name | }}", 1),
        ("a\n{{ x | no_such_filter }}", 2),
        ("a\nb\n{% endfor %}", 3),
        ("{{ Candidate\nName }}", 2),  # a field name never spans lines
    ],
)
def test_syntax_errors_say_where(source: str, line: int) -> None:
    with pytest.raises(TemplateError, match=rf"^template syntax error in html at line {line}: "):
        render(source, {"x": 1})


def test_syntax_error_in_subject_says_subject() -> None:
    with pytest.raises(TemplateError, match="syntax error in subject at line 1"):
        render("ok", subject="{{ unclosed")


def test_runtime_errors_are_template_errors() -> None:
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        render("{{ n / 0 }}", {"n": 1})
    with pytest.raises(TemplateError, match="TypeError"):
        render("{{ n + 'a' }}", {"n": 1})


# --- the sandbox ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ __ctx.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ user.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ items.append(1) }}",
        "{{ user.update({'a': 1}) }}",
        "{{ __ctx.clear() }}",
        "{{ namespace.__init__ }}",
    ],
)
def test_sandbox_blocks_internals_and_mutation(source: str) -> None:
    context = {"user": {"email": "a@x.test"}, "items": [1]}
    with pytest.raises(TemplateError):
        render(source, context)
    assert context == {"user": {"email": "a@x.test"}, "items": [1]}


def test_security_errors_are_reported_as_not_allowed() -> None:
    with pytest.raises(TemplateError, match=r"not allowed in html: .*__class__"):
        render("{{ __ctx.__class__ }}")


# --- size bounds ----------------------------------------------------------------------------


def test_rendered_size_is_bounded() -> None:
    with pytest.raises(TemplateError, match=f"larger than {MAX_RENDERED_CHARS}"):
        render("{% for i in range(20000) %}{{ chunk }}{% endfor %}", {"chunk": "x" * 100})
    with pytest.raises(TemplateError, match="larger than"):
        render("{{ big }}", {"big": "x" * (MAX_RENDERED_CHARS + 1)})
    assert len(html_of("{{ big }}", {"big": "x" * MAX_RENDERED_CHARS})) == MAX_RENDERED_CHARS


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 100000000 }}",
        "{{ ['x'] * 100000000 }}",
        "{{ 'x' | center(1000000000) }}",
        "{{ 'x'.ljust(1000000000) }}",
        "{{ 'x'.zfill(1000000000) }}",
        "{{ '%1000000000d' % 1 }}",
        "{{ '%*d' % (1000000000, 1) }}",
        "{{ '%1000000000d' | format(1) }}",
        "{{ '{:>1000000000}'.format(1) }}",
        "{{ '{:>{}}'.format(1, 1000000000) }}",
        "{{ ('x' * 999999) | replace('x', 'xx') }}",
        "{{ ('x' * 999999).replace('x', 'xx') }}",
        "{{ ([('x' * 999999)] * 10) | join }}",
        "{{ ''.join([('x' * 999999)] * 10) }}",
        "{{ 'a\nb' | indent(1000000000) }}",
        "{{ [1] | batch(1000000000, 0) | list }}",
        "{{ 2 ** 100000000 }}",
        "{{ (10 ** 10000) ** 10000 }}",
        "{{ lipsum(1000000000) }}",
        "{{ range(1000000000) | list }}",
    ],
)
def test_amplification_is_refused_before_it_allocates(source: str) -> None:
    with pytest.raises(TemplateError):
        render(source)


def test_legitimate_numbers_and_formatting_still_work() -> None:
    context = {"amount": 2_500_000, "phone": "0123456789"}
    assert html_of("{{ '%d' % amount }}", context) == "2500000"
    assert html_of("{{ '{:,}'.format(amount) }}", context) == "2,500,000"
    assert html_of("{{ '%s' | format(phone) }}", context) == "0123456789"
    assert html_of("{{ '-' * 10 }}|{{ 'ab'.center(6, '*') }}|{{ 2 ** 10 }}") == (
        "----------|**ab**|1024"
    )
    assert html_of("{{ items | join(', ') }}", {"items": ["a", "b"]}) == "a, b"


# --- context values -------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("boom")


def test_other_context_values_are_stringified() -> None:
    context = {
        "when": dt.date(2024, 5, 1),
        "amount": decimal.Decimal("12.50"),
        "id": uuid.UUID(int=1),
        "color": Color.RED,
        "level": Level.HIGH,
        "nested": {"at": dt.datetime(2024, 5, 1, 9, 30), 1: ("a", "b")},
        "odd": Unprintable(),
    }
    source = (
        "{{ when }}|{{ amount }}|{{ id }}|{{ color }}|{{ level + 1 }}"
        "|{{ nested.at }}|{{ nested['1'] | join('-') }}|{{ odd }}"
    )
    assert html_of(source, context) == (
        "2024-05-01|12.50|00000000-0000-0000-0000-000000000001|Color.RED|4"
        "|2024-05-01 09:30:00|a-b|&lt;Unprintable&gt;"
    )


def test_objects_in_the_context_expose_no_attributes() -> None:
    class Secretive:
        token = "t0ken"

        def __str__(self) -> str:
            return "secretive"

    with pytest.raises(TemplateError):
        render("{{ obj.token }}", {"obj": Secretive()})


def test_self_referencing_context_is_an_error() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(TemplateError, match="nested deeper"):
        render("x", {"loop": loop})


# --- compiled template cache ----------------------------------------------------------------


def test_same_template_renders_with_different_contexts() -> None:
    template = EmailTemplate(subject="{{ Candidate Name }}", html="<b>{{ Candidate Name }}</b>")
    for name in ["Ann", "<Bo>", "Cy"]:
        rendered = render_email(template, {"Candidate Name": name})
        assert rendered.subject == name
        assert rendered.text == name
