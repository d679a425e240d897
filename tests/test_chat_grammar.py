"""The chat grammar: `/ship owner/repo#42 ...` and `/release ...`, refusals, and fuzzers that it never raises."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatops.chat_grammar import CHAT_HELP, ChatCommand, ChatParse, ChatVerb, parse_chat
from chatops.grammar import Command, CommandError, Verb, parse_line

BOT = "ReleaseSecretaryBot"
PR = "acme/webshop#42"
URL = "https://github.com/acme/webshop/pull/42"
LONGEST_REPO = f"{'o' * 39}/{'r' * 100}"  # GitHub's longest owner and repository names
LONGEST_PR = 999_999_999


def chat(text: str, *, bot_username: str | None = None) -> ChatCommand:
    result = parse_chat(text, bot_username=bot_username)
    assert isinstance(result, ChatCommand), result
    return result


def error(text: str, *, bot_username: str | None = None) -> CommandError:
    result = parse_chat(text, bot_username=bot_username)
    assert isinstance(result, CommandError), result
    return result


def ship(text: str, *, bot_username: str | None = None) -> tuple[str | None, int | None, Command]:
    result = chat(text, bot_username=bot_username)
    assert result.verb is ChatVerb.SHIP
    assert result.command is not None
    return result.repo, result.pr, result.command


# --- /ship names its PR ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "verb", "when", "dry_run", "force"),
    [
        (f"/ship {PR}", Verb.SHIP, None, False, False),
        (f"/ship {PR} friday 3pm", Verb.SHIP, "friday 3pm", False, False),
        (f"/ship {PR} next tuesday afternoon", Verb.SHIP, "next tuesday afternoon", False, False),
        (f"/ship {PR} friday --dry-run", Verb.SHIP, "friday", True, False),
        (f"/ship {PR} now", Verb.NOW, None, False, False),
        (f"/ship {PR} now --dry-run", Verb.NOW, None, True, False),
        (f"/ship {PR} now --force", Verb.NOW, None, False, True),
        (f"/ship {PR} cancel", Verb.CANCEL, None, False, False),
        (f"/ship {PR} Cancel.", Verb.CANCEL, None, False, False),
        (f"/ship {PR} status", Verb.STATUS, None, False, False),
        (f"/ship {PR} hold", Verb.HOLD, None, False, False),
        (f"/ship {PR} unhold", Verb.UNHOLD, None, False, False),
        (f"/ship {PR} rollback", Verb.ROLLBACK, None, False, False),
        (f"/ship {PR} help", Verb.HELP, None, False, False),
        (f"/SHIP {PR} CANCEL", Verb.CANCEL, None, False, False),
        (f"  /ship   {PR}   cancel  ", Verb.CANCEL, None, False, False),
        (f"/ship {PR} friday 3pm\nthanks!", Verb.SHIP, "friday 3pm", False, False),  # the first line only
    ],
)
def test_ship_reads_the_rest_as_on_the_pull_request(
    text: str, verb: Verb, when: str | None, dry_run: bool, force: bool
) -> None:
    repo, pr, command = ship(text)
    assert (repo, pr) == ("acme/webshop", 42)
    assert (command.verb, command.when, command.dry_run, command.force) == (verb, when, dry_run, force)


def test_calendar_link_keeps_its_argument() -> None:
    _, _, command = ship(f"/ship {PR} calendar link")
    assert (command.verb, command.arg) == (Verb.CALENDAR, "link")


def test_the_ship_line_is_kept_as_typed() -> None:
    result = chat(f"  /ship {PR} friday  \nmore")
    assert result.line == f"/ship {PR} friday"


@pytest.mark.parametrize(
    ("target", "repo", "pr"),
    [
        (PR, "acme/webshop", 42),
        ("Acme-Corp/Web.Shop_2#7", "Acme-Corp/Web.Shop_2", 7),
        (URL, "acme/webshop", 42),
        (f"{URL}/files", "acme/webshop", 42),
        (f"{URL}?w=1", "acme/webshop", 42),
        (f"{URL}#issuecomment-1", "acme/webshop", 42),
        ("http://github.com/acme/webshop/pull/42", "acme/webshop", 42),
        ("https://ghe.example.com/acme/webshop/pull/42", "acme/webshop", 42),  # GitHub Enterprise Server
        (f"<{URL}>", "acme/webshop", 42),  # Slack wraps the links it recognises
        (f"{LONGEST_REPO}#{LONGEST_PR}", LONGEST_REPO, LONGEST_PR),
        (f"https://github.com/{LONGEST_REPO}/pull/{LONGEST_PR}", LONGEST_REPO, LONGEST_PR),
    ],
)
def test_ship_targets(target: str, repo: str, pr: int) -> None:
    assert ship(f"/ship {target} cancel")[:2] == (repo, pr)
    assert ship(f"/ship {target}")[:2] == (repo, pr)


@pytest.mark.parametrize(
    "target",
    [
        f"{'o' * 40}/webshop#42",  # owners have at most 39 characters
        f"acme/{'r' * 101}#42",  # repositories at most 100
        "acme/webshop#1234567890",  # PR numbers at most 9 digits
        "-acme/webshop#42",  # owners start with a letter or digit
        "acme#42",
        "webshop#42",
        "#42",
        "42",
        "acme/webshop/42",
        "https://github.com/acme/webshop/issues/42",
        "https://github.com/acme/webshop/pull/",
        "ftp://github.com/acme/webshop/pull/42",
    ],
)
def test_targets_that_do_not_name_a_pull_request(target: str) -> None:
    result = error(f"/ship {target} cancel")
    assert "is not a pull request" in result.message
    assert "`/ship owner/repo#42 ...`" in result.message


@pytest.mark.parametrize(
    ("text", "suggestions", "says"),
    [
        (
            "/ship",
            (f"/ship {PR}", f"/ship {PR} friday 3pm"),
            "it does not name a pull request. In chat, name it first: `/ship owner/repo#42 ...`",
        ),
        (
            "/ship friday 3pm",
            (f"/ship {PR} friday 3pm", f"/ship {PR}", f"/ship {PR} friday 3pm"),
            "`friday` is not a pull request",
        ),
        ("/ship cancel", (f"/ship {PR} cancel", f"/ship {PR}", f"/ship {PR} friday 3pm"), "`cancel` is not a"),
        (
            "/ship acme/webshop friday",
            (f"/ship {PR} friday",),
            "`acme/webshop` names a repository but not a pull request; add its number",
        ),
        ("/ship acme/webshop", (f"/ship {PR}",), "names a repository but not a pull request"),
        # The shared grammar's refusals, with its suggestions re-spelt to name the PR.
        (f"/ship {PR} cancle", (f"/ship {PR} cancel",), "`cancle` is not a command or a time"),
        (f"/ship {PR} stauts", (f"/ship {PR} status",), "is not a command or a time"),
        (
            f"/ship {PR} now friday",
            (f"/ship {PR} now", f"/ship {PR} friday"),
            "`/ship acme/webshop#42 now` takes no argument",
        ),
        (f"/ship {PR} --force", (f"/ship {PR} now --force",), "`--force` only goes with `/ship acme/webshop#42 now`"),
        (f"/ship {PR} now --forse", (f"/ship {PR} now --force",), "`--forse` is not an option"),
        (f"/ship {PR} friday --dryrun", (f"/ship {PR} friday --dry-run",), "`--dryrun` is not an option"),
        (f"/ship {PR} {'y' * 101}", (f"/ship {PR} friday 14:00",), "the time is too long (101 characters"),
    ],
)
def test_ship_errors(text: str, suggestions: tuple[str, ...], says: str) -> None:
    result = error(text)
    assert result.line == text
    assert result.suggestions == suggestions
    assert says in result.message
    assert result.message.startswith("I couldn't read \u201c")


def test_a_long_line_is_quoted_shortened() -> None:
    text = "/ship " + "x" * 300
    result = error(text)
    assert text[:100] in result.message
    assert text not in result.message
    assert "\u2026" in result.message


# --- /release manages the chat --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "verb", "repo", "pr"),
    [
        ("/release", ChatVerb.HELP, None, None),
        ("/release help", ChatVerb.HELP, None, None),
        ("/release link", ChatVerb.LINK, None, None),
        ("/release unlink", ChatVerb.UNLINK, None, None),
        ("/release status", ChatVerb.STATUS, None, None),
        ("/RELEASE Status.", ChatVerb.STATUS, None, None),
        ("/release status acme/webshop", ChatVerb.STATUS, "acme/webshop", None),
        (f"/release status {PR}", ChatVerb.STATUS, "acme/webshop", 42),
        (f"/release status {URL}", ChatVerb.STATUS, "acme/webshop", 42),
        ("/release subscribe acme/webshop", ChatVerb.SUBSCRIBE, "acme/webshop", None),
        ("/release unsubscribe acme/webshop", ChatVerb.UNSUBSCRIBE, "acme/webshop", None),
        (f"/release subscribe {LONGEST_REPO}", ChatVerb.SUBSCRIBE, LONGEST_REPO, None),
        ("  /release   link  \nand more", ChatVerb.LINK, None, None),
    ],
)
def test_release_commands(text: str, verb: ChatVerb, repo: str | None, pr: int | None) -> None:
    result = chat(text)
    assert (result.verb, result.repo, result.pr, result.command) == (verb, repo, pr, None)
    assert result.line == text.split("\n")[0].strip()


@pytest.mark.parametrize(
    ("text", "suggestions", "says"),
    [
        (
            "/release foo",
            ("/release help", "/release status", "/release subscribe acme/webshop"),
            "`foo` is not a `/release` command; try `/release help`",
        ),
        ("/release stauts", ("/release status",), "try `/release status`"),
        ("/release lnik", ("/release link", "/release unlink"), "`lnik` is not a `/release` command"),
        ("/release link now", ("/release link",), "`/release link` takes nothing after it"),
        ("/release unlink me", ("/release unlink",), "`/release unlink` takes nothing after it"),
        ("/release help me", ("/release help",), "takes nothing after it"),
        ("/release subscribe", ("/release subscribe acme/webshop",), "it needs a repository like `acme/webshop`"),
        ("/release unsubscribe", ("/release unsubscribe acme/webshop",), "it needs a repository"),
        ("/release status acme", ("/release status acme/webshop#42",), "`acme` is not a repository"),
        ("/release subscribe a/b c/d", ("/release subscribe acme/webshop",), "`a/b c/d` is not a repository"),
        (
            f"/release subscribe {PR}",
            ("/release subscribe acme/webshop",),
            "a chat follows a whole repository, not one pull request",
        ),
        (f"/release unsubscribe {URL}", ("/release unsubscribe acme/webshop",), "not one pull request"),
    ],
)
def test_release_errors(text: str, suggestions: tuple[str, ...], says: str) -> None:
    result = error(text)
    assert result.line == text
    assert result.suggestions == suggestions
    assert says in result.message
    assert result.message.startswith(f"I couldn't read \u201c{text}\u201d: ")


@pytest.mark.parametrize(
    ("text", "suggestions"),
    [
        ("/shipit acme/webshop#42", (f"/ship {PR}",)),
        ("/shp acme/webshop#42 cancel", (f"/ship {PR} cancel",)),
        ("/releas status", ("/release status",)),
        ("/relase link", ("/release link",)),
    ],
)
def test_near_misses_of_our_commands(text: str, suggestions: tuple[str, ...]) -> None:
    result = error(text)
    assert result.suggestions == suggestions
    assert "is not a command" in result.message


def test_help_names_every_command_and_its_examples_parse() -> None:
    for verb in ChatVerb:
        if verb is not ChatVerb.SHIP:
            assert f"`/release {verb}" in CHAT_HELP
    examples = re.findall(r"`(/(?:ship|release)[^`]*)`", CHAT_HELP)
    assert len(examples) >= 6
    for text in examples:
        text = text.replace("[owner/repo[#42]]", "acme/webshop#42")
        assert isinstance(parse_chat(text), ChatCommand), text


# --- whose message is it --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hello",
        f"ship {PR}",
        f"please /ship {PR}",
        f"`/ship {PR}`",
        "/",
        "/start",
        "/help",
        "/settings",
        "/stop",
        f"/deploy {PR}",
    ],
)
def test_messages_not_addressed_to_us(text: str) -> None:
    assert parse_chat(text) is None
    assert parse_chat(text, bot_username=BOT) is None


@pytest.mark.parametrize(
    ("text", "bot_username"),
    [
        (f"/ship@{BOT} {PR} cancel", BOT),
        (f"/ship@{BOT.lower()} {PR} cancel", BOT),
        (f"/SHIP@{BOT.upper()} {PR} cancel", BOT.lower()),
    ],
)
def test_telegram_commands_addressed_to_us(text: str, bot_username: str) -> None:
    assert ship(text, bot_username=bot_username)[2].verb is Verb.CANCEL


def test_telegram_release_addressed_to_us() -> None:
    assert chat(f"/release@{BOT} link", bot_username=BOT).verb is ChatVerb.LINK
    assert chat(f"/release@{BOT}", bot_username=BOT).verb is ChatVerb.HELP


def test_telegram_errors_addressed_to_us_still_name_the_pr() -> None:
    result = error(f"/ship@{BOT} {PR} cancle", bot_username=BOT)
    assert result.suggestions == (f"/ship {PR} cancel",)
    assert result.line == f"/ship@{BOT} {PR} cancle"


@pytest.mark.parametrize(
    ("text", "bot_username"),
    [
        (f"/ship@OtherBot {PR} cancel", BOT),
        ("/release@OtherBot status", BOT),
        (f"/ship@{BOT}x {PR}", BOT),
        (f"/ship@{BOT} {PR}", None),  # we do not know our own name yet: not provably ours
        ("/shipp@OtherBot cancle", BOT),  # another bot's command is never corrected
        ("/ship@OtherBot", BOT),
    ],
)
def test_telegram_commands_addressed_to_another_bot(text: str, bot_username: str | None) -> None:
    assert parse_chat(text, bot_username=bot_username) is None


# --- once bugs, now fixed -----------------------------------------------------------------------------------------


def test_errors_from_the_shared_grammar_quote_the_chat_line() -> None:
    text = f"/ship {PR} cancle"
    result = error(text)
    assert f"\u201c{text}\u201d" in result.message
    assert "`/ship cancel`" not in result.message  # in chat that is itself an error


@pytest.mark.parametrize("text", ["/skip", "/shop friday", "/shipping is late", "/slip"])
def test_other_words_are_not_taken_for_ship(text: str) -> None:
    assert parse_line(text) is None  # on GitHub they are not ours
    assert parse_chat(text) is None


@pytest.mark.parametrize("gap", ["\t", "\u00a0"])
def test_any_whitespace_ends_the_target(gap: str) -> None:
    repo, pr, command = ship(f"/ship {PR}{gap}friday")
    assert (repo, pr, command.when) == ("acme/webshop", 42, "friday")


def test_slack_labelled_links_name_the_pr() -> None:
    text = "/ship <http://github.com/acme/webshop/pull/42|github.com/acme/webshop/pull/42> cancel"
    assert ship(text)[:2] == ("acme/webshop", 42)


@pytest.mark.parametrize(
    "text",
    [
        # parse_chat's near-miss fix keeps the rest as it was: no PR named, or a misspelt verb kept.
        "/shipit",
        "/shp friday",
        "/shipp acme/webshop#42 cancle",
        "/releas foo",
        # "name it first" puts the example PR before the rest, however wrong the rest is.
        "/ship cancle",
        "/ship now friday",
        "/ship friday " + "x" * 95,
        # "add its number" keeps a misspelt rest.
        "/ship acme/webshop cancle",
        # grammar.py: the fix for a misspelt --dry-run on a verb that cannot take it.
        f"/ship {PR} cancel --dryrun",
    ],
)
def test_every_suggestion_is_a_command(text: str) -> None:
    for suggestion in error(text).suggestions:
        assert isinstance(parse_chat(suggestion), ChatCommand), suggestion


def test_a_misspelt_release_verb_keeps_the_repository() -> None:
    assert error("/release subscrbe acme/webshop").suggestions[0] == "/release subscribe acme/webshop"


# --- never raises ---------------------------------------------------------------------------------

_HEADS = ("/ship", "/SHIP", "/release", f"/ship@{BOT}", f"/release@{BOT.lower()}", "/ship@Other", "/shp", "/releas")
_TARGETS = (PR, URL, f"<{URL}>", "acme/webshop", "webshop#42", "acme/webshop#1234567890", "", f"{URL}|x>")
_WORDS = (
    *("now", "cancel", "cancle", "status", "hold", "unhold", "help", "rollback", "calendar", "link", "unlink"),
    *("subscribe", "unsubscribe", "subscrbe", "friday", "3pm", "tomorrow", "in", "--dry-run", "-n", "--force"),
    *("--dryrun", "\u2014dry-run", PR, "acme/webshop", URL, "x" * 60, "@", "#", "<", ">", "\t", "\u00a0"),
)
_FUZZ = settings(max_examples=150, deadline=None)
_commands = st.builds(
    lambda head, target, words: " ".join([head, target, *words]),
    st.sampled_from(_HEADS),
    st.sampled_from(_TARGETS),
    st.lists(st.sampled_from(_WORDS), max_size=5),
)
_usernames = st.one_of(st.none(), st.just(BOT), st.text(max_size=10))


def assert_says_why(result: ChatParse | None) -> None:
    if isinstance(result, CommandError):
        assert result.message.startswith("I couldn't read \u201c")
        quoted, _, why = result.message.partition("\u201d: ")
        assert quoted
        assert why.strip()


def assert_quotes_what_was_typed(text: str, result: ChatParse | None) -> None:
    if isinstance(result, CommandError):
        typed = text.split("\n", 1)[0].strip()
        assert result.line == typed
        assert typed[:100] in result.message


@_FUZZ
@given(st.text(), _usernames)
def test_parse_chat_never_raises(text: str, bot_username: str | None) -> None:
    result = parse_chat(text, bot_username=bot_username)
    assert result is None or isinstance(result, ChatCommand | CommandError)
    assert_says_why(result)


@_FUZZ
@given(st.text().map(lambda rest: "/ship " + rest), _usernames)
def test_ship_lines_never_raise(text: str, bot_username: str | None) -> None:
    result = parse_chat(text, bot_username=bot_username)
    assert result is not None
    assert_says_why(result)


@_FUZZ
@given(_commands, _usernames)
def test_generated_commands_never_raise(text: str, bot_username: str | None) -> None:
    result = parse_chat(text, bot_username=bot_username)
    assert_says_why(result)
    if isinstance(result, ChatCommand):
        assert (result.command is not None) == (result.verb is ChatVerb.SHIP)
        if result.verb is ChatVerb.SHIP:
            assert result.repo is not None and result.pr is not None


@_FUZZ
@given(
    st.lists(st.sampled_from(_WORDS), max_size=4).map(lambda words: " ".join(["/release", *words])),
)
def test_release_errors_quote_the_line_and_suggest_commands(text: str) -> None:
    result = parse_chat(text)
    assert_quotes_what_was_typed(text, result)
    if isinstance(result, CommandError):
        assert result.suggestions
        for suggestion in result.suggestions:
            assert isinstance(parse_chat(suggestion), ChatCommand), suggestion


@_FUZZ
@given(st.sampled_from((PR, URL, f"<{URL}>")), st.lists(st.sampled_from(_WORDS), max_size=5).map(" ".join))
def test_the_rest_reads_as_on_the_pull_request(target: str, rest: str) -> None:
    """Everything after the PR is the shared grammar's: the same command, or a refusal for the same reason."""
    alone = parse_line(f"/ship {rest}".strip())
    result = parse_chat(f"/ship {target} {rest}")
    if isinstance(alone, Command):
        assert isinstance(result, ChatCommand)
        assert result.command is not None
        got = (result.command.verb, result.command.when, result.command.dry_run, result.command.force)
        assert got == (alone.verb, alone.when, alone.dry_run, alone.force)
        assert result.command.arg == alone.arg
    else:
        # Refused for the same reason; the suggestions, named for chat, are those that read as commands.
        assert isinstance(result, CommandError) and isinstance(alone, CommandError)

        def unnamed(message: str) -> str:
            # The PR named once for the chat, however often the rest itself names it too.
            before = None
            while before != message:
                before = message
                message = message.replace(f"/ship {target}", "/ship").replace(f"/ship {PR}", "/ship")
            return message.split("\u201d: ", 1)[1]

        assert unnamed(result.message) == unnamed(alone.message)  # the same reason


@_FUZZ
@example(f"/ship {PR} cancle", None)
@given(st.one_of(_commands, st.text()), _usernames)
def test_every_error_quotes_what_was_typed(text: str, bot_username: str | None) -> None:
    assert_quotes_what_was_typed(text, parse_chat(text, bot_username=bot_username))


@_FUZZ
@example("/ship cancle")
@given(st.one_of(_commands, st.text()))
def test_every_suggestion_parses_back(text: str) -> None:
    result = parse_chat(text)
    if isinstance(result, CommandError):
        for suggestion in result.suggestions:
            assert isinstance(parse_chat(suggestion), ChatCommand), suggestion
