"""anima.safety.pii: what is found, what is left alone, placeholders and their round trip."""

from __future__ import annotations

import itertools
import random
import string
import time

import pytest

from anima.safety.pii import Span, find, redact, restore


def kinds_and_texts(text: str, names: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    return [(s.kind, s.text) for s in find(text, names)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("write to john.doe+work@example.co.uk today", "EMAIL", "john.doe+work@example.co.uk"),
        ("mail zoë@münchen.de.", "EMAIL", "zoë@münchen.de"),
        ("call +44 20 7946 0958 now", "PHONE", "+44 20 7946 0958"),
        ("call +1-202-555-0143", "PHONE", "+1-202-555-0143"),
        ("call +81 3-1234-5678", "PHONE", "+81 3-1234-5678"),
        ("call (202) 555-0143", "PHONE", "(202) 555-0143"),
        ("call 202-555-0143.", "PHONE", "202-555-0143"),
        ("call 202.555.0143", "PHONE", "202.555.0143"),
        ("call 1-800-555-0199", "PHONE", "1-800-555-0199"),
        ("appelle le 06 12 34 56 78", "PHONE", "06 12 34 56 78"),
        ("ruf 030 1234567 an", "PHONE", "030 1234567"),
        ("ring 020 7946 0958", "PHONE", "020 7946 0958"),
        ("bel 0612345678", "PHONE", "0612345678"),
        ("card 4111 1111 1111 1111 exp 12/25", "CARD", "4111 1111 1111 1111"),
        ("card 4111-1111-1111-1111", "CARD", "4111-1111-1111-1111"),
        ("card 4111111111111111", "CARD", "4111111111111111"),
        ("amex 3782 822463 10005", "CARD", "3782 822463 10005"),
        ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN", "DE89 3704 0044 0532 0130 00"),
        ("IBAN GB82WEST12345698765432", "IBAN", "GB82WEST12345698765432"),
        ("server at 192.168.1.254, ok", "IP", "192.168.1.254"),
        ("host 10.0.0.1.", "IP", "10.0.0.1"),
        ("v6 2001:db8:85a3::8a2e:370:7334 here", "IP", "2001:db8:85a3::8a2e:370:7334"),
        ("SSN 078-05-1120", "SSN", "078-05-1120"),
        ("I live at 221B Baker Street, London", "ADDRESS", "221B Baker Street"),
        ("at 1600 Pennsylvania Avenue NW, Washington", "ADDRESS", "1600 Pennsylvania Avenue NW"),
        ("flat at 10 Downing St.", "ADDRESS", "10 Downing St."),
        ("au 12 rue de la Paix, Paris", "ADDRESS", "12 rue de la Paix"),
        ("3, avenue des Champs-Élysées", "ADDRESS", "3, avenue des Champs-Élysées"),
        ("wohne in der Hauptstraße 5 in Berlin", "ADDRESS", "Hauptstraße 5"),
        ("Berliner Straße 12a", "ADDRESS", "Berliner Straße 12a"),
        ("woon op Kerkstraat 12", "ADDRESS", "Kerkstraat 12"),
        ("abito in Via Roma 10", "ADDRESS", "Via Roma 10"),
        ("vivo en Calle Mayor 5", "ADDRESS", "Calle Mayor 5"),
        ("London SW1A 1AA", "POSTCODE", "SW1A 1AA"),
        ("ZIP 94107-1234", "POSTCODE", "94107-1234"),
        ("San Francisco, CA 94107", "POSTCODE", "94107"),
        (
            "db https://bob:s3cr3t@db.example.com:5432/app?x=1.",
            "URL_CREDENTIALS",
            "https://bob:s3cr3t@db.example.com:5432/app?x=1",
        ),
        ("ask Mr. Smith", "PERSON", "Smith"),
        ("ask Dr Jane Doe tomorrow", "PERSON", "Jane Doe"),
        ("Mrs Patel said", "PERSON", "Patel"),
        ("Mr O'Brien said", "PERSON", "O'Brien"),
        ("my sister Anna is here", "PERSON", "Anna"),
        ("ask my boss, Tom Hardy, about it", "PERSON", "Tom Hardy"),
        ("his wife Maria called", "PERSON", "Maria"),
        ("My wife Renée called", "PERSON", "Renée"),
        ("my mother-in-law Jean-Marie visits", "PERSON", "Jean-Marie"),
        ("hello, my name is Ana.", "PERSON", "Ana"),
        ("I'm Bob", "PERSON", "Bob"),
        ("I’m Zoë Today", "PERSON", "Zoë"),
        ("I am Sam Lee and", "PERSON", "Sam Lee"),
    ],
)
def test_finds_each_kind(text: str, kind: str, value: str) -> None:
    assert kinds_and_texts(text) == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    [
        "In 2024 we moved; back in 1999 too.",
        "The deadline is 2024-05-01, or 05.01.2024, or 05-01-2024, or 2024/05/01.",
        "Meet at 10:30, or 10:30:45, or 2024-05-01T10:30:00Z.",
        "Upgrade to version 1.2.3 (v1.2.3.4, version 1.2.3.4).",
        "It costs $1,299.99 or €1.299,99 or 1,000,000 dollars.",
        "Run kill -9 1234 then ps 123456789.",
        "The meeting is in room 101.",
        "The number 1234567 is ordinary, and so is 12345678.",
        "Card-like 4111 1111 1111 1112 fails Luhn.",
        "GB00WEST12345698765432 fails mod 97.",
        "Not an SSN: 000-12-3456, 666-12-3456, 912-12-3456.",
        "Not an IP: 256.1.1.1, 01.02.03.04, ::1",
        "I'm Happy to help. I'm Tired. I am Not sure. I'm Going home. I'm Interesting.",
        "The shop is 3 streets away, 3 Streets Away.",
        "AB 12345 is not a state, and 94107 alone is ambiguous.",
        "see https://example.com/a:b@c and user@host",
        "my sister is nice; my friend said Hi.",
        "",
    ],
)
def test_leaves_ordinary_text_alone(text: str) -> None:
    assert find(text) == []


def test_spans_are_sorted_non_overlapping_and_match_the_text() -> None:
    text = (
        "Mail a@example.com, url https://u:p@example.com/x, card 4111 1111 1111 1111, "
        "Dr Jane Doe at 221B Baker Street, London NW1 6XE, tel +44 20 7946 0958, ip 10.1.2.3."
    )
    spans = find(text)
    assert [s.kind for s in spans] == [
        "EMAIL",
        "URL_CREDENTIALS",
        "CARD",
        "PERSON",
        "ADDRESS",
        "POSTCODE",
        "PHONE",
        "IP",
    ]
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))
    assert all(text[s.start : s.end] == s.text for s in spans)


def test_longer_span_wins_an_overlap() -> None:
    # The email inside the URL and the phone-like run inside the IBAN are not reported apart.
    assert kinds_and_texts("go https://bob:pw@mail.example.com now") == [
        ("URL_CREDENTIALS", "https://bob:pw@mail.example.com")
    ]
    assert kinds_and_texts("pay DE89 3704 0044 0532 0130 00") == [("IBAN", "DE89 3704 0044 0532 0130 00")]


def test_known_names_whole_word_and_case_insensitive() -> None:
    text = "Annual report: ANN and ann met Anne, Ann's dog, Tom  Hardy and Joanna."
    spans = find(text, names=["Ann", "tom hardy", "", "  "])
    assert [(s.kind, s.text) for s in spans] == [
        ("PERSON", "ANN"),
        ("PERSON", "ann"),
        ("PERSON", "Ann"),
        ("PERSON", "Tom  Hardy"),
    ]
    assert find("Annual Joanna", names=["Ann", "Anna"]) == []


def test_known_names_with_regex_characters_and_common_words() -> None:
    assert kinds_and_texts("I told A.J. and Hope", names=("A.J.", "Hope")) == [("PERSON", "A.J."), ("PERSON", "Hope")]
    assert find("I told AxJx", names=("A.J.",)) == []


def test_redact_gives_the_same_value_the_same_placeholder() -> None:
    text = "bob@example.com wrote to eve@example.com, then bob@example.com again; my sister Anna too."
    r = redact(text)
    assert r.text == "[EMAIL_1] wrote to [EMAIL_2], then [EMAIL_1] again; my sister [PERSON_1] too."
    assert r.mapping == {"[EMAIL_1]": "bob@example.com", "[EMAIL_2]": "eve@example.com", "[PERSON_1]": "Anna"}
    assert r.counts() == {"EMAIL": 3, "PERSON": 1}
    assert [s.text for s in r.spans] == ["bob@example.com", "eve@example.com", "bob@example.com", "Anna"]


def test_redact_numbers_each_kind_separately() -> None:
    r = redact("Ann and Bob, call +44 20 7946 0958 or 202-555-0143", names=["Ann", "Bob"])
    assert r.text == "[PERSON_1] and [PERSON_2], call [PHONE_1] or [PHONE_2]"
    assert r.counts() == {"PERSON": 2, "PHONE": 2}


def test_restore_round_trip() -> None:
    text = (
        "Dr Jane Doe (jane@clinic.org, +1-202-555-0143) lives at 12 rue de la Paix; "
        "Jane's IBAN is DE89 3704 0044 0532 0130 00."
    )
    r = redact(text, names=["Jane"])
    assert "jane@clinic.org" not in r.text and "Doe" not in r.text and "DE89" not in r.text
    assert restore(r.text, r.mapping) == text


def test_restore_in_a_model_reply() -> None:
    mapping = {"[PERSON_1]": "Anna", "[EMAIL_1]": "anna@example.com", "[URL_CREDENTIALS_1]": "ftp://a:b@h"}
    reply = "Sure, I'll email [EMAIL_1] for [person_1]; [PERSON_2] is unknown, [URL_CREDENTIALS_1] too."
    assert (
        restore(reply, mapping) == "Sure, I'll email anna@example.com for Anna; [PERSON_2] is unknown, ftp://a:b@h too."
    )
    assert restore("no placeholders [here]", mapping) == "no placeholders [here]"


def test_empty_text() -> None:
    assert find("") == []
    r = redact("", names=["Ann"])
    assert (r.text, r.mapping, r.spans, r.counts()) == ("", {}, [], {})
    assert restore("", {"[EMAIL_1]": "x@y.z"}) == ""


def test_unicode_text_offsets() -> None:
    text = "東京 📞 Zoë: +81 3-1234-5678, mein Bruder wohnt in der Hauptstraße 5 — ma sœur Zoë aussi."
    spans = find(text, names=["zoë"])
    assert [(s.kind, s.text) for s in spans] == [
        ("PERSON", "Zoë"),
        ("PHONE", "+81 3-1234-5678"),
        ("ADDRESS", "Hauptstraße 5"),
        ("PERSON", "Zoë"),
    ]
    assert all(text[s.start : s.end] == s.text for s in spans)
    assert (
        redact(text, names=["zoë"]).text
        == "東京 📞 [PERSON_1]: [PHONE_1], mein Bruder wohnt in der [ADDRESS_1] — ma sœur [PERSON_1] aussi."
    )


def test_span_is_frozen() -> None:
    span = Span("EMAIL", 0, 5, "a@b.c")
    with pytest.raises(AttributeError):
        span.start = 1  # type: ignore[misc]


ORDINARY_KB = (
    "Hi, this is a normal message about my plans for the week. I need to buy groceries, call the "
    "plumber about the sink, and finish the quarterly report by Friday. The meeting moved to 3pm in "
    "room 101. Version 1.2.3 of the app costs $12.99 and was released in 2024. Remember to water the "
    "plants and walk the dog twice a day. "
) * 4


def _garbage(alphabet: str, seed: int, size: int) -> str:
    rnd = random.Random(seed)
    return "".join(rnd.choices(alphabet, k=size))


def _cpu_seconds(text: str) -> float:
    """CPU time of `find` on `text`, best of 3: robust to a busy machine."""
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        find(text, names=["Anna", "Tom Hardy"])
        best = min(best, time.process_time() - t)
    return best


@pytest.mark.parametrize(
    "make",
    [
        lambda n: (ORDINARY_KB * (n // len(ORDINARY_KB) + 1))[:n],
        lambda n: _garbage(string.printable, 1, n),
        lambda n: _garbage("0123456789 -.+()/:@", 2, n),
        lambda n: ("Aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa " * (n // 35 + 1))[:n],
        lambda n: "a.b@" * (n // 4),
        lambda n: ("my sister Anna I'm Bob Mr Smith 12 Baker Street " * (n // 48 + 1))[:n],
    ],
    ids=["ordinary", "printable", "digits-and-separators", "long-capitalised-words", "email-like", "many-hits"],
)
def test_time_grows_linearly_with_the_text(make) -> None:
    """16 times the text takes about 16 times as long (measured 16-19 here); a pattern
    that backtracks on some input would take 256 times as long on it, or more. A ratio
    of the machine's own times, so a slow or busy machine does not fail it."""
    small, large = make(1 << 15), make(1 << 19)
    ratio = _cpu_seconds(large) / max(_cpu_seconds(small), 1e-4)
    assert ratio < 40, f"{ratio:.0f}x the time for 16x the text"
    spans = find(large, names=["Anna"])
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))


def test_redact_continues_a_mapping_across_texts():
    first = redact("write to ann@example.com")
    second = redact("ann@example.com and bob@example.com", mapping=first.mapping)
    assert second.text == "[EMAIL_1] and [EMAIL_2]"
    assert first.mapping is second.mapping and second.mapping == {
        "[EMAIL_1]": "ann@example.com",
        "[EMAIL_2]": "bob@example.com",
    }
