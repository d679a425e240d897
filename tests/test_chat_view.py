"""How a release reads in chat: the view, its buttons and milestones, and its Slack and Telegram spellings."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block

from bot.checks import escape_markdown
from bot.policy import Slot, format_slot
from bot.release import OPEN, Release, State, Transition
from chatops.chat_grammar import CHAT_HELP
from chatops.grammar import HELP_TEXT
from chatops.markup import slack_escape, to_slack, to_telegram
from chatops.slack import blocks
from chatops.telegram import CALLBACK_PREFIX, keyboard, render_html
from chatops.view import (
    ACTION_LABELS,
    DIRECT,
    MILESTONES,
    Action,
    ChatView,
    actions_for,
    button_id,
    button_value,
    direct_text,
    milestone_text,
    milestones,
    render_view,
)
from tests.fakes.telegram import FormattedText, HtmlError, parse_html

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
SLOT = Slot(datetime(2026, 11, 27, 13, 0, tzinfo=UTC), datetime(2026, 11, 27, 13, 30, tzinfo=UTC))
LATER = Slot(datetime(2026, 11, 30, 13, 0, tzinfo=UTC), datetime(2026, 11, 30, 13, 30, tzinfo=UTC))
HEAD, MERGE = "a" * 40, "b" * 40
GITHUB = "https://github.com"
PR_URL = "https://github.com/acme/webshop/pull/42"
LONGEST_REPO = f"{'o' * 39}/{'r' * 100}"  # GitHub's longest owner and repository names
NASTY = "<b>&amp;</b> <a href='x'>&lt;</a> & < > \" ' @alice `x` **y** [z](https://q)"


def step(
    to: State, reason: str = "the required checks passed", *, frm: State | None = None, actor: str = "github"
) -> Transition:
    return Transition(NOW, frm, to, actor, reason, "github_checks")


def release(state: State = State.SCHEDULED, **kw: Any) -> Release:
    fields: dict[str, Any] = {
        "repo": "acme/webshop",
        "pr": 42,
        "number": 1,
        "installation_id": 1,
        "state": state,
        "title": "Faster widgets",
        "base": "main",
        "head_sha": HEAD,
        "requested_by": "alice",
        "requested_at": NOW,
        "slot": SLOT,
        "verified_sha": HEAD,
        "audit": (step(State.REQUESTED, "/ship friday 2pm"), step(state, frm=State.REQUESTED)),
    }
    fields.update(kw)
    return Release(**fields)


def view(state: State = State.SCHEDULED, **kw: Any) -> ChatView:
    return render_view(release(state, **kw), GITHUB)


# --- buttons ------------------------------------------------------------------------------------------

N, P, C, R = Action.SHIP_NOW, Action.POSTPONE, Action.CANCEL, Action.ROLLBACK
ACTION_CASES = [
    (State.REQUESTED, {}, (N, P, C)),
    (State.VERIFYING, {}, (N, P, C)),
    (State.SCHEDULED, {}, (N, P, C)),
    (State.BLOCKED, {}, (N, P, C)),
    (State.HELD, {}, (N, C)),  # a held release is not moved: it waits for unhold
    (State.REQUESTED, {"slot": None}, (N, C)),  # nothing booked yet: nothing to postpone
    (State.HELD, {"slot": None}, (N, C)),
    (State.RELEASING, {"merge_sha": MERGE}, ()),
    (State.RELEASED, {"merge_sha": MERGE}, (R,)),
    (State.FAILED, {"merge_sha": MERGE}, (R,)),
    (State.RELEASED, {"merge_sha": MERGE, "rollback_id": "123"}, ()),  # one rollback at a time
    (State.FAILED, {"merge_sha": MERGE, "rollback_id": "123"}, ()),
    (State.FAILED, {}, ()),  # it failed before the merge: nothing to roll back
    (State.RELEASED, {}, ()),
    (State.CANCELLED, {}, ()),
    (State.ROLLED_BACK, {"merge_sha": MERGE, "rollback_id": "123"}, ()),
    (State.ROLLED_BACK, {"merge_sha": MERGE}, ()),
]


@pytest.mark.parametrize(("state", "fields", "actions"), ACTION_CASES)
def test_buttons_each_state_offers(state: State, fields: dict[str, Any], actions: tuple[Action, ...]) -> None:
    assert actions_for(release(state, **fields)) == actions
    assert view(state, **fields).actions == actions


def test_every_state_has_a_button_case() -> None:
    assert {state for state, _, _ in ACTION_CASES} == set(State)


@pytest.mark.parametrize("state", sorted(OPEN))
def test_open_states_can_always_be_shipped_now_and_cancelled(state: State) -> None:
    for slot in (SLOT, None):
        actions = actions_for(release(state, slot=slot))
        assert actions[0] is Action.SHIP_NOW and Action.CANCEL in actions and Action.ROLLBACK not in actions


def test_every_action_has_a_label_and_a_one_letter_value() -> None:
    assert set(ACTION_LABELS) == set(Action)
    assert len({a.value for a in Action}) == len(Action)
    for action in Action:
        assert re.fullmatch(r"[a-z]", action.value)


def test_button_id_is_short_stable_and_distinct() -> None:
    key = release().key
    assert button_id(key) == button_id("acme/webshop#42/1")
    assert re.fullmatch(r"[0-9a-f]{20}", button_id(key))
    keys = [f"acme/webshop#{pr}/{n}" for pr in range(1, 50) for n in range(1, 5)]
    assert len({button_id(k) for k in keys}) == len(keys)


@pytest.mark.parametrize(
    ("state", "fields"),
    [(State.SCHEDULED, {}), (State.HELD, {}), (State.RELEASED, {"merge_sha": MERGE})],
)
def test_telegram_callback_data_fits_for_the_longest_names(state: State, fields: dict[str, Any]) -> None:
    longest = release(state, repo=LONGEST_REPO, pr=999_999_999, number=1_000_000, **fields)
    shown = render_view(longest, GITHUB)
    markup = keyboard(shown)
    assert markup is not None
    data = [button.callback_data for row in markup.inline_keyboard for button in row]
    assert len(data) == len(shown.actions)
    for sent, action in zip(data, shown.actions, strict=True):
        assert isinstance(sent, str)
        assert len(sent.encode()) <= 64  # Telegram's limit on callback data
        assert sent == f"{CALLBACK_PREFIX}|{action.value}|{button_value(shown)}"
        prefix, value, ref = sent.split("|")  # as TelegramChat.input_of reads it back
        assert (prefix, Action(value), ref) == ("rs1", action, f"{button_id(longest.key)}.{shown.digest[:8]}")


def test_telegram_keyboard_rows_of_two() -> None:
    shown = view(State.SCHEDULED)
    markup = keyboard(shown)
    assert markup is not None
    rows = [[(b.text, b.callback_data) for b in row] for row in markup.inline_keyboard]
    ref = button_value(shown)
    assert rows == [
        [(ACTION_LABELS[N], f"rs1|n|{ref}"), (ACTION_LABELS[P], f"rs1|p|{ref}")],
        [(ACTION_LABELS[C], f"rs1|c|{ref}")],
    ]


@pytest.mark.parametrize("state", [State.RELEASING, State.CANCELLED, State.ROLLED_BACK])
def test_no_keyboard_without_actions(state: State) -> None:
    assert keyboard(view(state)) is None


# --- the view -----------------------------------------------------------------------------------------


def test_render_view_of_a_scheduled_release() -> None:
    shown = view(State.SCHEDULED)
    assert shown == ChatView(
        headline="📅 Scheduled: acme/webshop#42",
        title="Faster widgets",
        url=PR_URL,
        facts=(
            ("State", "scheduled"),
            ("Window", "Fri 27 Nov 13:00-13:30 UTC"),
            ("Requested by", "@alice"),
            ("Verified", "aaaaaaa"),
        ),
        note="the required checks passed",
        actions=(N, P, C),
        release_key="acme/webshop#42/1",
    )


def test_render_view_in_the_repository_zone() -> None:
    shown = view(timezone="Europe/Berlin")
    assert ("Window", "Fri 27 Nov 14:00-14:30 Europe/Berlin (13:00 UTC)") in shown.facts


@pytest.mark.parametrize("github_url", ["https://github.com", "https://github.com/"])
def test_the_url_names_the_pull_request(github_url: str) -> None:
    assert render_view(release(), github_url).url == PR_URL
    assert render_view(release(), "https://ghe.example.com/").url == "https://ghe.example.com/acme/webshop/pull/42"


def test_facts_before_anything_is_known() -> None:
    shown = view(State.REQUESTED, slot=None, verified_sha=None, audit=())
    assert dict(shown.facts) == {
        "State": "requested",
        "Window": "not booked yet",
        "Requested by": "@alice",
        "Verified": "not yet",
    }
    assert shown.note == ""


def test_a_merged_release_shows_its_merge() -> None:
    assert ("Merged", "bbbbbbb") in view(State.RELEASED, merge_sha=MERGE).facts
    assert "Merged" not in dict(view(State.SCHEDULED).facts)


@pytest.mark.parametrize("state", list(State))
def test_blockers_and_the_next_slot_show_while_they_matter(state: State) -> None:
    facts = dict(view(state, blockers=("ci failed", "a freeze"), proposal=LATER).facts)
    matters = state in (State.BLOCKED, State.VERIFYING)
    assert (facts.get("Blockers") == "ci failed; a freeze") is matters
    assert (facts.get("Next free slot") == format_slot(LATER, ZoneInfo("UTC"))) is matters
    assert matters or ("Blockers" not in facts and "Next free slot" not in facts)


def test_long_blockers_and_notes_are_cut() -> None:
    shown = view(State.BLOCKED, blockers=("x" * 400, "y" * 400), audit=(step(State.BLOCKED, "z" * 5000),))
    assert len(dict(shown.facts)["Blockers"]) == 500
    assert shown.note == "z" * 1000


def test_the_note_is_the_latest_reason() -> None:
    audit = (step(State.SCHEDULED, "booked"), step(State.HELD, "held by bob", frm=State.SCHEDULED, actor="bob"))
    assert view(State.HELD, audit=audit).note == "held by bob"


# --- digest -------------------------------------------------------------------------------------------


def test_the_same_view_gives_the_same_digest() -> None:
    first, again = view(), view()
    assert first is not again and first.digest == again.digest
    assert re.fullmatch(r"[0-9a-f]{24}", first.digest)


@pytest.mark.parametrize(
    "fields",
    [
        {"head_sha": "c" * 40},  # not shown
        {"version": 7},
        {"updated_at": NOW + timedelta(hours=1)},
        {"deploy_log": ("line 1",)},
        {"lead_minutes": 30},
    ],
)
def test_what_is_not_shown_does_not_change_the_digest(fields: dict[str, Any]) -> None:
    assert view(**fields).digest == view().digest


@pytest.mark.parametrize(
    ("state", "fields"),
    [
        (State.HELD, {}),
        (State.SCHEDULED, {"title": "Faster widgets!"}),
        (State.SCHEDULED, {"slot": LATER}),
        (State.SCHEDULED, {"timezone": "Europe/Berlin"}),
        (State.SCHEDULED, {"requested_by": "bob"}),
        (State.SCHEDULED, {"verified_sha": "c" * 40}),
        (State.SCHEDULED, {"verified_sha": None}),
        (State.SCHEDULED, {"merge_sha": MERGE}),
        (State.SCHEDULED, {"slot": None}),  # the postpone button goes
        (State.SCHEDULED, {"pr": 43}),
        (State.SCHEDULED, {"repo": "acme/shop"}),
        (State.SCHEDULED, {"audit": (step(State.SCHEDULED, "moved by the calendar"),)}),
    ],
)
def test_each_shown_fact_changes_the_digest(state: State, fields: dict[str, Any]) -> None:
    assert view(state, **fields).digest != view().digest


def test_blocked_facts_change_the_digest() -> None:
    blocked = view(State.BLOCKED, blockers=("ci failed",), proposal=LATER)
    assert view(State.BLOCKED, blockers=("ci failed", "lint"), proposal=LATER).digest != blocked.digest
    assert view(State.BLOCKED, blockers=("ci failed",), proposal=SLOT).digest != blocked.digest


def test_a_rollback_started_changes_the_digest() -> None:
    released = view(State.RELEASED, merge_sha=MERGE)
    assert view(State.RELEASED, merge_sha=MERGE, rollback_id="9").digest != released.digest


_shown_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
_views = st.builds(
    ChatView,
    headline=_shown_text,
    title=_shown_text,
    url=_shown_text,
    facts=st.lists(st.tuples(st.sampled_from(["State", "Window", "Verified"]), _shown_text), max_size=4).map(tuple),
    note=_shown_text,
    actions=st.lists(st.sampled_from(list(Action)), unique=True).map(tuple),
    release_key=st.just("acme/webshop#42/1"),
)


@settings(max_examples=150, deadline=None)
@given(_views, _views)
def test_views_that_show_different_things_have_different_digests(one: ChatView, other: ChatView) -> None:
    if replace(one, release_key="") == replace(other, release_key=""):
        assert one.digest == other.digest
    else:
        assert one.digest != other.digest


@settings(max_examples=150, deadline=None)
@given(_views, st.sampled_from(["headline", "title", "url", "note"]), _shown_text)
def test_changing_one_field_changes_the_digest(shown: ChatView, field: str, value: str) -> None:
    changed = replace(shown, **{field: value})
    assert (changed.digest == shown.digest) is (getattr(shown, field) == value)


# --- milestones ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(State))
def test_milestones_pick_the_moments_people_hear_about(state: State) -> None:
    audit = (step(State.REQUESTED, frm=None), step(state, "why", frm=State.REQUESTED))
    picked = milestones(release(state, audit=audit))
    is_milestone = state in {State.BLOCKED, State.RELEASING, State.RELEASED, State.FAILED, State.ROLLED_BACK}
    assert picked == ([(1, audit[1])] if is_milestone else [])


def test_milestones_keep_their_audit_index_and_skip_repeats() -> None:
    audit = (
        step(State.REQUESTED, "/ship", frm=None),
        step(State.BLOCKED, "ci failed", frm=State.REQUESTED),
        step(State.BLOCKED, "ci failed again", frm=State.BLOCKED),  # no news: no thread reply
        step(State.SCHEDULED, "ci passed", frm=State.BLOCKED),
        step(State.RELEASING, "merging", frm=State.SCHEDULED),
        step(State.RELEASED, "deployed", frm=State.RELEASING),
        step(State.RELEASED, "rollback failed: boom", frm=State.RELEASED),
        step(State.ROLLED_BACK, "rolled back", frm=State.RELEASED, actor="bob"),
    )
    picked = milestones(release(State.ROLLED_BACK, audit=audit))
    assert [i for i, _ in picked] == [1, 4, 5, 7]
    assert all(audit[i] is t for i, t in picked)
    assert {t.to_state for _, t in picked} <= MILESTONES


def test_a_first_transition_into_a_milestone_counts() -> None:
    entry = step(State.BLOCKED, "the PR is a draft", frm=None)
    assert milestones(release(State.BLOCKED, audit=(entry,))) == [(0, entry)]


@pytest.mark.parametrize(
    ("to", "actor", "text"),
    [
        (State.BLOCKED, "github", "⛔ Blocked: why"),
        (State.RELEASING, "release-secretary", "🔀 Merging: why"),
        (State.RELEASED, "dev-agent", "✅ Released: why"),
        (State.FAILED, "calendar", "💥 Failed: why"),
        (State.ROLLED_BACK, "bob", "↩️ Rolled back (by @bob): why"),
        (State.SCHEDULED, "alice", "scheduled (by @alice): why"),
    ],
)
def test_milestone_text(to: State, actor: str, text: str) -> None:
    assert milestone_text(release(), step(to, "why", actor=actor)) == text


def test_milestone_text_is_cut_to_a_message() -> None:
    assert len(milestone_text(release(), step(State.FAILED, "x" * 5000))) == 3000


def test_direct_text_names_the_release_and_links_it() -> None:
    text = direct_text(release(State.FAILED), step(State.FAILED, "deploy failed"), GITHUB)
    assert text == f"Your release acme/webshop#42 (Faster widgets): 💥 Failed: deploy failed\n{PR_URL}"
    assert DIRECT <= MILESTONES


# --- Telegram HTML ------------------------------------------------------------------------------------


def telegram(source: str) -> FormattedText:
    parsed = parse_html(source)
    assert parsed.sloppy == []  # everything escaped as the Bot API documentation asks
    return parsed


def shown_lines(shown: ChatView) -> list[str]:
    lines = [shown.headline, shown.title or shown.url, *(f"{k}: {v}" for k, v in shown.facts)]
    return [*lines, shown.note] if shown.note else lines


def test_render_html_shows_the_view() -> None:
    shown = view(State.BLOCKED, blockers=("ci failed",), audit=(step(State.BLOCKED, "ci failed"),))
    parsed = telegram(render_html(shown))
    assert parsed.text.split("\n") == shown_lines(shown)
    kinds = [entity["type"] for entity in parsed.entities]
    assert kinds.count("bold") == 1 + len(shown.facts)
    assert [e.get("url") for e in parsed.entities if e["type"] == "text_link"] == [PR_URL]
    assert kinds[-1] == "italic"


def test_render_html_without_a_title_links_the_url() -> None:
    parsed = telegram(render_html(view(title="")))
    assert parsed.text.split("\n")[1] == PR_URL


_angry = st.text(st.sampled_from("<>&\"';/|ab \u00e9\U0001f680"))


@settings(max_examples=100, deadline=None)
@given(title=_angry.filter(lambda t: len(t) <= 256), note=st.text(st.sampled_from("<>&\"' x"), max_size=300))
def test_render_html_parses_for_titles_and_notes_full_of_markup(title: str, note: str) -> None:
    shown = view(State.BLOCKED, title=title, blockers=(note[:50],), audit=(step(State.BLOCKED, note),))
    assert telegram(render_html(shown)).text.split("\n") == shown_lines(shown)


@pytest.mark.parametrize("note", ["<" * 1000, "<>&" * 334, "&" * 1000])
def test_render_html_parses_for_the_longest_notes(note: str) -> None:
    shown = view(State.BLOCKED, title="&" * 256, audit=(step(State.BLOCKED, note),))
    try:
        parsed = telegram(render_html(shown))
    except HtmlError as exc:
        pytest.fail(f"Telegram would refuse it: {exc}")
    assert parsed.text.startswith(shown.headline)


# --- Slack Block Kit ----------------------------------------------------------------------------------

_SLACK_LINK = re.compile(r"<(?P<url>https?://[^\s<>|]+)\|(?P<label>[^<>]*)>")


def slack_plain(mrkdwn: str) -> str:
    """What Slack shows: its three escapes undone."""
    return mrkdwn.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def assert_no_raw_angles(mrkdwn: str) -> None:
    outside = _SLACK_LINK.sub("", mrkdwn)
    assert "<" not in outside and ">" not in outside, mrkdwn


def assert_block_kit_limits(out: list[dict[str, Any]]) -> None:
    assert len(out) <= 50
    for block in out:
        parsed = Block.parse(block)  # slack_sdk's own checks
        assert parsed is not None
        parsed.validate_json()
        assert len(block.get("block_id", "")) <= 255
        if block["type"] == "section":
            if "text" in block:
                assert 0 < len(block["text"]["text"]) <= 3000
            if "fields" in block:
                assert 0 < len(block["fields"]) <= 10
                for item in block["fields"]:
                    assert 0 < len(item["text"]) <= 2000
        elif block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
            for item in block["elements"]:
                assert 0 < len(item["text"]) <= 3000
        elif block["type"] == "actions":
            assert 0 < len(block["elements"]) <= 25
            for button in block["elements"]:
                assert 0 < len(button["text"]["text"]) <= 75
                assert 0 < len(button["action_id"]) <= 255
                assert 0 < len(button["value"]) <= 255
                if "confirm" in button:
                    confirm = button["confirm"]
                    assert len(confirm["title"]["text"]) <= 100
                    assert len(confirm["text"]["text"]) <= 300
                    assert len(confirm["confirm"]["text"]) <= 30 and len(confirm["deny"]["text"]) <= 30


def test_blocks_show_the_view() -> None:
    shown = view(State.SCHEDULED)
    out = blocks(shown)
    assert_block_kit_limits(out)
    assert [b["type"] for b in out] == ["section", "section", "context", "actions"]
    assert out[0]["text"]["text"] == f"*📅 Scheduled: acme/webshop#42*\n<{PR_URL}|Faster widgets>"
    assert [f["text"] for f in out[1]["fields"]] == [f"*{k}*\n{v}" for k, v in shown.facts]
    assert out[2]["elements"][0]["text"] == "the required checks passed"
    buttons = out[3]["elements"]
    assert [b["action_id"] for b in buttons] == ["release_n", "release_p", "release_c"]
    assert {b["value"] for b in buttons} == {button_value(shown)}
    assert [b.get("style") for b in buttons] == ["primary", None, "danger"]
    assert buttons[2]["confirm"]["text"]["text"] == shown.headline


def test_blocks_without_note_or_actions() -> None:
    out = blocks(view(State.CANCELLED, audit=()))
    assert_block_kit_limits(out)
    assert [b["type"] for b in out] == ["section", "section"]


def test_rollback_asks_first() -> None:
    [button] = blocks(view(State.RELEASED, merge_sha=MERGE))[-1]["elements"]
    assert (button["action_id"], button["style"]) == ("release_r", "danger")
    assert button["confirm"]["confirm"]["text"] == "Roll back"


def test_blocks_for_the_longest_names() -> None:
    longest = release(State.BLOCKED, repo=LONGEST_REPO, pr=999_999_999, title="t" * 256, blockers=("b" * 500,))
    shown = render_view(longest, GITHUB)
    out = blocks(shown)
    assert_block_kit_limits(out)
    assert out[-1]["elements"][0]["value"] == button_value(shown)


@settings(max_examples=100, deadline=None)
@given(title=_angry.filter(lambda t: len(t) <= 256), note=st.text(st.sampled_from("<>&\"' x*_~`|"), max_size=300))
def test_blocks_escape_titles_and_notes_full_of_markup(title: str, note: str) -> None:
    shown = view(State.BLOCKED, title=title, blockers=(note[:50],), audit=(step(State.BLOCKED, note),))
    out = blocks(shown)
    assert_block_kit_limits(out)
    head = out[0]["text"]["text"]
    assert_no_raw_angles(head)
    [link] = _SLACK_LINK.finditer(head)
    assert (link["url"], slack_plain(link["label"])) == (PR_URL, title or PR_URL)
    for item in out[1]["fields"]:
        assert_no_raw_angles(item["text"])
    assert [slack_plain(f["text"]) for f in out[1]["fields"]] == [f"*{k}*\n{v}" for k, v in shown.facts]
    if note:
        assert_no_raw_angles(out[2]["elements"][0]["text"])
        assert slack_plain(out[2]["elements"][0]["text"]) == note


def test_blocker_fields_stay_within_block_kit_limits() -> None:
    assert_block_kit_limits(blocks(view(State.BLOCKED, blockers=("&" * 500,))))


def test_a_long_note_is_cut_between_characters() -> None:
    note = "<>&" * 333
    [context] = [b for b in blocks(view(State.BLOCKED, audit=(step(State.BLOCKED, note),))) if b["type"] == "context"]
    shown = context["elements"][0]["text"]
    assert re.search(r"&[a-z]*$", shown) is None
    assert shown.endswith("\u2026") and note.startswith(slack_plain(shown.removesuffix("\u2026")))


# --- markup: the bot's replies in chat ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "slack", "html_"),
    [
        ("plain", "plain", "plain"),
        (
            "`/ship acme/webshop#42 cancel`",
            "`/ship acme/webshop#42 cancel`",
            "<code>/ship acme/webshop#42 cancel</code>",
        ),
        ("**Release Secretary**", "*Release Secretary*", "<b>Release Secretary</b>"),
        (
            "[log](https://ci.example.com/1?a=1&b=2)",
            "<https://ci.example.com/1?a=1&b=2|log>",
            '<a href="https://ci.example.com/1?a=1&amp;b=2">log</a>',
        ),
        ("a < b & c > d", "a &lt; b &amp; c &gt; d", "a &lt; b &amp; c &gt; d"),
        ("`a<b>&c`", "`a&lt;b&gt;&amp;c`", "<code>a&lt;b&gt;&amp;c</code>"),
        ("**x & y**", "*x &amp; y*", "<b>x &amp; y</b>"),
        ("[a & b](https://x.y)", "<https://x.y|a &amp; b>", '<a href="https://x.y">a &amp; b</a>'),
        ("[l](https://x.y/a|b>c)", "<https://x.y/a%7Cb%3Ec|l>", '<a href="https://x.y/a|b&gt;c">l</a>'),
        (r"\*not bold\*", "*not bold*", "*not bold*"),
        ("Tom &amp; Jerry", "Tom &amp; Jerry", "Tom &amp; Jerry"),
        ("@\u200balice", "@alice", "@alice"),
        ("[x](javascript:alert(1))", "[x](javascript:alert(1))", "[x](javascript:alert(1))"),  # not a web link
        (
            "**a** and `b` and [c](https://c.d)",
            "*a* and `b` and <https://c.d|c>",
            '<b>a</b> and <code>b</code> and <a href="https://c.d">c</a>',
        ),
    ],
)
def test_markup(markdown: str, slack: str, html_: str) -> None:
    assert to_slack(markdown) == slack
    assert to_telegram(markdown) == html_
    telegram(to_telegram(markdown))


def test_every_help_text_reads_in_chat() -> None:
    for text in (CHAT_HELP, HELP_TEXT):
        parsed = telegram(to_telegram(text))
        assert "`" not in parsed.text and "**" not in parsed.text
        assert_no_raw_angles(to_slack(text))
        assert "**" not in to_slack(text)


_FRAGMENTS = (
    *("`", "*", "**", "[", "]", "(", ")", "\\", "&", "&amp;", "&lt;", "<", ">", "@", "@\u200b", "\u200b", '"', "'"),
    *(" ", "\n", "|", "#", "_", "x", "\u00e9", "\U0001f680", "https://", "](http://e.f)"),
    "](https://x.y/?a=1&b=<c>\"d')",
)
_markdown = st.lists(
    st.one_of(st.sampled_from(_FRAGMENTS), st.text(st.characters(blacklist_characters="\x00"), max_size=4)),
    max_size=30,
).map("".join)
_literal = st.text(st.characters(blacklist_categories=("Cs",)))


@settings(max_examples=200, deadline=None)
@given(_markdown)
def test_to_telegram_is_always_valid_html(markdown: str) -> None:
    telegram(to_telegram(markdown))


@settings(max_examples=200, deadline=None)
@given(_markdown)
def test_to_slack_makes_the_only_angle_brackets(markdown: str) -> None:
    out = to_slack(markdown)
    outside = re.sub(r"<https?://[^\s|]+\|[^<>]*>", "", out)  # the links to_slack made (their URL as it made it)
    assert "<" not in outside and ">" not in outside, out


@settings(max_examples=200, deadline=None)
@given(_literal)
def test_escaped_text_comes_out_as_written(text: str) -> None:
    said = text.replace("\n", " ").replace("\r", " ")  # escape_markdown keeps a table row on one line
    markdown = escape_markdown(text)
    assert slack_plain(to_slack(markdown)) == said
    assert_no_raw_angles(to_slack(markdown))
    assert telegram(to_telegram(markdown)).text == said


@settings(max_examples=150, deadline=None)
@example(NASTY, "@alice\n\\")
@given(_literal, _literal)
def test_escaped_text_among_the_bots_own_markup(name: str, summary: str) -> None:
    link = "[details](https://ci.example.com/r?a=1&b=2)"
    markdown = f"**Blocked**: `ci` {escape_markdown(name)} ({link}) {escape_markdown(summary)}"
    parsed = telegram(to_telegram(markdown))
    one_line = name.replace("\n", " ").replace("\r", " "), summary.replace("\n", " ").replace("\r", " ")
    assert parsed.text == f"Blocked: ci {one_line[0]} (details) {one_line[1]}"
    assert [e["type"] for e in parsed.entities][:3] == ["bold", "code", "text_link"]
    slack = to_slack(markdown)
    assert_no_raw_angles(slack)
    assert slack.startswith("*Blocked*: `ci` ")
    assert "<https://ci.example.com/r?a=1&b=2|details>" in slack


def test_to_slack_links_carry_no_raw_angle_brackets() -> None:
    out = to_slack("[x](https://x.y/<c>)")
    assert_no_raw_angles(out)


@pytest.mark.parametrize(
    ("markdown", "said"), [(f"**{escape_markdown('a*')}**", "a*"), (f"[{escape_markdown('x]y')}](https://x.y)", "x]y")]
)
def test_escaped_text_inside_bold_and_link_labels(markdown: str, said: str) -> None:
    parsed = telegram(to_telegram(markdown))
    assert parsed.text == said
    assert len(parsed.entities) == 1


def test_to_telegram_links_with_control_characters() -> None:
    try:
        telegram(to_telegram("[x](https://x.y/\x00)"))
    except HtmlError as exc:
        pytest.fail(f"Telegram would refuse it: {exc}")


def test_slack_escape_is_the_three_characters_only() -> None:
    assert slack_escape("<a & b> *c* _d_ `e`") == "&lt;a &amp; b&gt; *c* _d_ `e`"
    assert html.unescape(slack_escape("&lt;")) == "&lt;"
