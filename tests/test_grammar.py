"""The /ship grammar: every form, every refusal, comment structure, and a fuzzer that it never raises."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatops.grammar import (
    HELP_TEXT,
    MAX_COMMANDS_PER_COMMENT,
    Command,
    CommandError,
    ParseResult,
    Verb,
    parse_comment,
    parse_line,
)


def command(line: str) -> Command:
    result = parse_line(line)
    assert isinstance(result, Command), result
    return result


def error(line: str) -> CommandError:
    result = parse_line(line)
    assert isinstance(result, CommandError), result
    return result


def assert_quotes_line(result: ParseResult) -> None:
    if isinstance(result, CommandError):
        assert result.message.strip()
        assert result.line[:60] in result.message


@pytest.mark.parametrize(
    ("line", "verb", "when", "dry_run"),
    [
        ("/ship", Verb.SHIP, None, False),
        ("/ship friday", Verb.SHIP, "friday", False),
        ("/ship Friday 15:00 Europe/Berlin", Verb.SHIP, "Friday 15:00 Europe/Berlin", False),
        ("/ship next tuesday afternoon", Verb.SHIP, "next tuesday afternoon", False),
        ("/ship friday --dry-run", Verb.SHIP, "friday", True),
        ("/ship --dry-run friday 3pm", Verb.SHIP, "friday 3pm", True),
        ("/ship friday --dry-run 3pm", Verb.SHIP, "friday 3pm", True),
        ("/ship friday -n", Verb.SHIP, "friday", True),
        ("/ship --DRY-RUN", Verb.SHIP, None, True),
        ("/ship \u2014dry-run tomorrow", Verb.SHIP, "tomorrow", True),  # a phone turned "--" into a dash
        ("/ship --dry-run", Verb.SHIP, None, True),
        ("/ship -n", Verb.SHIP, None, True),
        ("/ship now", Verb.NOW, None, False),
        ("/ship NOW --dry-run", Verb.NOW, None, True),
        ("/ship cancel", Verb.CANCEL, None, False),
        ("/ship Cancel.", Verb.CANCEL, None, False),
        ("/ship status", Verb.STATUS, None, False),
        ("/ship hold", Verb.HOLD, None, False),
        ("/ship unhold", Verb.UNHOLD, None, False),
        ("/ship help", Verb.HELP, None, False),
        ("/SHIP help", Verb.HELP, None, False),
        ("   /ship   friday  ", Verb.SHIP, "friday", False),
        ("/ship\tfriday", Verb.SHIP, "friday", False),
        # Time words stay times, even when they are close to a verb.
        ("/ship today", Verb.SHIP, "today", False),
        ("/ship tonight", Verb.SHIP, "tonight", False),
        ("/ship sat", Verb.SHIP, "sat", False),
        ("/ship in 2 hours", Verb.SHIP, "in 2 hours", False),
        ("/ship 2026-12-01 14:00", Verb.SHIP, "2026-12-01 14:00", False),
        # Far from every verb: a time for the policy to judge, not a grammar error.
        ("/ship blorp", Verb.SHIP, "blorp", False),
        ("/ship whenever you like", Verb.SHIP, "whenever you like", False),
        ("/ship " + "x" * 100, Verb.SHIP, "x" * 100, False),
    ],
)
def test_commands(line: str, verb: Verb, when: str | None, dry_run: bool) -> None:
    assert command(line) == Command(verb, when, dry_run, line.strip())


def test_only_the_first_line_is_read() -> None:
    assert command("/ship friday\nthanks!") == Command(Verb.SHIP, "friday", False, "/ship friday")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "hello",
        "ship friday",
        "please /ship friday",
        "`/ship friday`",
        "> /ship friday",
        "/skip",
        "/shop friday",
        "/shipping is late",
        "/deploy friday",
        "/",
    ],
)
def test_lines_not_addressed_to_us(line: str) -> None:
    assert parse_line(line) is None


@pytest.mark.parametrize(
    ("line", "suggestions", "says"),
    [
        ("/shipit", ("/ship",), "`/shipit` is not a command; did you mean `/ship`?"),
        ("/ship-it friday", ("/ship friday",), "did you mean `/ship friday`?"),
        ("/shp friday", ("/ship friday",), "`/shp` is not a command; did you mean `/ship friday`?"),
        ("/sihp now", ("/ship now",), "did you mean `/ship now`?"),
        ("/ship cancle", ("/ship cancel",), "`cancle` is not a command or a time; did you mean `/ship cancel`?"),
        ("/ship stauts", ("/ship status",), "did you mean `/ship status`?"),
        ("/ship hodl", ("/ship hold",), "did you mean `/ship hold`?"),
        ("/ship unhodl", ("/ship unhold",), "did you mean `/ship unhold`?"),
        ("/ship hlep", ("/ship help",), "did you mean `/ship help`?"),
        ("/ship --force", ("/ship now --force",), "`--force` only goes with `/ship now`"),
        ("/ship now --forse", ("/ship now --force",), "`--forse` is not an option (the options are `--dry-run`"),
        ("/ship cancel --force", ("/ship now --force",), "`--force` only goes with `/ship now`"),
        ("/ship friday --dryrun", ("/ship friday --dry-run",), "try `/ship friday --dry-run`"),
        ("/ship now friday", ("/ship now", "/ship friday"), "`/ship now` takes no argument, but got `friday`"),
        ("/ship cancel please", ("/ship cancel",), "`/ship cancel` takes no argument, but got `please`"),
        ("/ship now --dry-run friday", ("/ship now --dry-run", "/ship friday"), "takes no argument"),
        (
            "/ship cancel --dry-run",
            ("/ship cancel",),
            "`--dry-run` only goes with a schedule (`/ship` or `/ship now`), not `/ship cancel`",
        ),
        ("/ship status -n", ("/ship status",), "only goes with a schedule"),
        ("/ship " + "x" * 101, ("/ship friday 14:00",), "the time is too long (101 characters, at most 100)"),
    ],
)
def test_errors(line: str, suggestions: tuple[str, ...], says: str) -> None:
    result = error(line)
    assert result.line == line
    assert result.suggestions == suggestions
    assert says in result.message
    assert result.message.startswith(f"I couldn't read \u201c{line}")


def test_long_lines_are_quoted_shortened() -> None:
    line = "/ship --force " + "y" * 300
    result = error(line)
    assert line[:100] in result.message
    assert len(result.message) < 400  # the line and the fix, each cut to 120 characters


# --- comments -----------------------------------------------------------------------------------------


def verbs(body: str) -> list[str]:
    return [result.line for result in parse_comment(body)]


def test_comment_reads_top_level_lines_only() -> None:
    body = "\n".join(
        [
            "Thanks! Let's go.",
            "/ship friday",
            "> /ship cancel",
            "  > /ship cancel",
            "```",
            "/ship now",
            "```",
            "   ~~~~ text",
            "/ship hold",
            "   ~~~~",
            "````",
            "```",
            "/ship hold",
            "````",
            "    /ship unhold",
            "\t/ship unhold",
            "<!-- release-secretary",
            "/ship now",
            "-->",
            "<!-- inline --> /ship status",
            "  /ship help",
        ]
    )
    assert verbs(body) == ["/ship friday", "/ship status", "/ship help"]


def test_an_unclosed_fence_runs_to_the_end() -> None:
    assert verbs("/ship status\n```bash\n/ship now\n/ship cancel") == ["/ship status"]


def test_a_backtick_fence_cannot_carry_backticks_in_its_info() -> None:
    # "```not `a` fence" is inline code, not a fence opener, so the next line still counts.
    assert verbs("```not `a` fence\n/ship status") == ["/ship status"]


def test_an_unclosed_html_comment_hides_the_rest() -> None:
    assert verbs("/ship status\n<!-- draft\n/ship now") == ["/ship status"]


def test_windows_line_endings() -> None:
    assert parse_comment("hi\r\n/ship friday\r\n/ship status\r\n") == [
        Command(Verb.SHIP, "friday", False, "/ship friday"),
        Command(Verb.STATUS, None, False, "/ship status"),
    ]


def test_at_most_five_commands_per_comment() -> None:
    body = "\n".join(f"/ship {day}" for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    results = parse_comment(body)
    assert len(results) == MAX_COMMANDS_PER_COMMENT
    assert [r.line for r in results] == ["/ship mon", "/ship tue", "/ship wed", "/ship thu", "/ship fri"]


def test_errors_count_among_the_commands() -> None:
    results = parse_comment("/ship cancle\nnice\n/ship status")
    assert isinstance(results[0], CommandError)
    assert results[1] == Command(Verb.STATUS, None, False, "/ship status")


def test_help_text_lists_every_command() -> None:
    for verb in Verb:
        if verb is not Verb.SHIP:
            assert f"`/ship {verb}`" in HELP_TEXT
    assert "--dry-run" in HELP_TEXT


def test_every_example_in_the_help_parses() -> None:
    examples = [span for span in re.findall(r"`([^`]+)`", HELP_TEXT) if span.startswith("/ship")]
    assert len(examples) >= 10
    for example in examples:
        if example != "/ship WHEN":
            assert isinstance(parse_line(example), Command), example


# --- never raises -------------------------------------------------------------------------------------

_TOKENS = (
    *("now", "cancel", "cancle", "status", "hold", "unhold", "help", "friday", "tomorrow", "3pm", "in"),
    *("--dry-run", "-n", "--force", "-", "--", "\u2014dry-run", "`", ">", "<!--", "-->", "x" * 60),
)
_FUZZ = settings(max_examples=200, deadline=None)


@_FUZZ
@given(st.text())
def test_parse_line_never_raises(text: str) -> None:
    result = parse_line(text)
    if result is not None:
        assert_quotes_line(result)


@_FUZZ
@given(st.text())
def test_ship_lines_never_raise(rest: str) -> None:
    result = parse_line("/ship " + rest)
    assert result is not None
    assert_quotes_line(result)


@_FUZZ
@given(st.lists(st.sampled_from(_TOKENS), max_size=6).map(" ".join), st.sampled_from(["/ship", "/shp", "/SHIP"]))
def test_generated_commands_never_raise(rest: str, head: str) -> None:
    result = parse_line(f"{head} {rest}")
    assert result is not None
    assert_quotes_line(result)
    if isinstance(result, Command):
        assert result.when is None or len(result.when) <= 100
        assert result.verb is Verb.SHIP or result.when is None


@_FUZZ
@given(
    st.lists(st.one_of(st.text(max_size=30), st.sampled_from(["```", "~~~", "<!--", "-->", "> /ship", "/ship now"])))
)
def test_parse_comment_never_raises(lines: list[str]) -> None:
    results = parse_comment("\n".join(lines))
    assert len(results) <= MAX_COMMANDS_PER_COMMENT
    for result in results:
        assert_quotes_line(result)


def test_force_goes_with_now() -> None:
    result = parse_line("/ship now --force")
    assert isinstance(result, Command) and result.verb is Verb.NOW and result.force and not result.dry_run
    plain = parse_line("/ship now")
    assert isinstance(plain, Command) and not plain.force
