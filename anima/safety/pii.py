"""Personal data in text: find it, swap it for placeholders before text leaves the machine, put it back.

Detected, with regular expressions only (stdlib `re` and `ipaddress`, linear time):
EMAIL; PHONE (+44 20 7946 0958, +1-202-555-0143, (202) 555-0143, 202.555.0143, and
trunk-0 European numbers like 06 12 34 56 78 or 030 1234567; 7-15 digits); CARD (13-19
digits, Luhn-checked); IBAN (mod-97-checked); IP (IPv4, IPv6); SSN (US, valid areas);
ADDRESS (a house number next to a street word: "221B Baker Street", "12 rue de la Paix",
"Hauptstraße 5", "Via Roma 10"); POSTCODE (UK "SW1A 1AA" with its space, US ZIP+4, or a
5-digit ZIP after a state code: "CA 94107"); URL_CREDENTIALS (scheme://user:pass@...);
PERSON, only from evidence: the names the caller passes (the people the assistant knows),
a title ("Dr Jane Doe"), a relation ("my sister Anna") or a self-introduction ("my name is
Ana", "I'm Ana", skipping common words: "I'm Happy").

Not detected: there is no named-entity model, so a bare unknown name ("Anna said...") is
missed, as are street addresses without a house number, bare 5-digit ZIPs, US local
7-digit numbers (555-0143), phone numbers without a + or a trunk 0 outside the US formats,
dates of birth, and identifiers of other countries (passports, national ids, tax numbers).
Only the title/relation/self-introduction name is redacted, not the title or relation.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

UP = "A-ZÀ-ÖØ-Þ"  # capitals; later letters of a name may be any letter
NAME = rf"(?:[{UP}]['’])?[{UP}][^\W\d_]{{1,30}}(?:-[{UP}][^\W\d_]{{1,30}})?"  # Anna, O'Brien, Jean-Luc
NAMES = rf"(?P<v>{NAME}(?: {NAME}){{0,2}})"
# Capitalised words that follow "I'm"/"my friend" and are not names.
COMMON = {
    "a",
    "an",
    "the",
    "and",
    "or",
    "but",
    "so",
    "not",
    "no",
    "yes",
    "all",
    "also",
    "just",
    "still",
    "very",
    "really",
    "quite",
    "pretty",
    "too",
    "here",
    "there",
    "back",
    "home",
    "out",
    "off",
    "up",
    "in",
    "on",
    "at",
    "to",
    "for",
    "from",
    "with",
    "about",
    "into",
    "over",
    "now",
    "then",
    "today",
    "tomorrow",
    "yesterday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "i",
    "you",
    "he",
    "she",
    "it",
    "we",
    "they",
    "me",
    "my",
    "his",
    "her",
    "its",
    "our",
    "your",
    "their",
    "this",
    "that",
    "these",
    "those",
    "who",
    "what",
    "when",
    "where",
    "why",
    "how",
    "happy",
    "sad",
    "tired",
    "sorry",
    "sure",
    "fine",
    "good",
    "great",
    "okay",
    "ok",
    "glad",
    "afraid",
    "busy",
    "hungry",
    "thirsty",
    "excited",
    "new",
    "old",
    "ready",
    "done",
    "well",
    "sick",
    "ill",
    "alone",
    "single",
    "married",
    "pregnant",
    "late",
    "early",
    "free",
    "available",
    "interested",
    "confused",
    "curious",
    "worried",
    "lost",
    "bored",
    "stuck",
    "better",
    "worse",
    "right",
    "wrong",
    "correct",
    "certain",
    "aware",
    "able",
    "unable",
    "positive",
    "hot",
    "cold",
    "cool",
    "going",
    "trying",
    "looking",
    "working",
    "feeling",
    "thinking",
    "planning",
    "wondering",
    "asking",
    "writing",
    "using",
    "getting",
    "having",
    "doing",
    "being",
    "gonna",
    "actually",
    "currently",
    "probably",
    "definitely",
    "totally",
    "literally",
    "almost",
    "kind",
    "sort",
    "like",
    "one",
    "two",
    "english",
    "american",
    "british",
    "french",
    "german",
    "spanish",
    "italian",
    "canadian",
    "chinese",
    "japanese",
    "indian",
    "human",
    "vegan",
    "vegetarian",
    "retired",
    "unemployed",
    "student",
    "allergic",
    "thanks",
    "thank",
    "please",
    "hi",
    "hello",
    "dear",
    "sir",
    "madam",
}
RELATIONS = (
    "sister|brother|mother|mom|mum|father|dad|wife|husband|partner|girlfriend|boyfriend|son|daughter|"
    "best friend|friend|boss|manager|colleague|co-?worker|cousin|aunt|uncle|niece|nephew|grandmother|"
    "grandma|grandfather|grandpa|grandson|granddaughter|neighbou?r|doctor|therapist|fianc[ée]e?|"
    "roommate|flatmate|teacher|child|kid|baby|ex|stepmother|stepfather|stepson|stepdaughter|"
    "mother-in-law|father-in-law|sister-in-law|brother-in-law|landlord|landlady|lawyer|dentist|"
    "assistant|coach|tutor|student|client|pupil|nanny"
)
STATES = {  # US states, DC and Puerto Rico, before a ZIP
    "AL",
    "AK",
    "AZ",
    "AR",
    "CA",
    "CO",
    "CT",
    "DE",
    "DC",
    "FL",
    "GA",
    "HI",
    "ID",
    "IL",
    "IN",
    "IA",
    "KS",
    "KY",
    "LA",
    "ME",
    "MD",
    "MA",
    "MI",
    "MN",
    "MS",
    "MO",
    "MT",
    "NE",
    "NV",
    "NH",
    "NJ",
    "NM",
    "NY",
    "NC",
    "ND",
    "OH",
    "OK",
    "OR",
    "PA",
    "RI",
    "SC",
    "SD",
    "TN",
    "TX",
    "UT",
    "VT",
    "VA",
    "WA",
    "WV",
    "WI",
    "WY",
    "PR",
}
STREET = (
    "Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl|Square|Sq|"
    "Terrace|Crescent|Close|Parkway|Pkwy|Highway|Hwy|Row|Gardens|Grove|Mews|Walk|Circle|Alley"
)
FRENCH = "rue|avenue|av\\.|boulevard|bd|place|quai|chemin|allée|impasse|cours|route"  # "12 rue ...": number first
PARTICLES = "(?:(?:de|du|des|la|le|les|del|della|di|da|do|dos|das|los|las|el) |[ld]['’]){0,3}"
GERMANIC = "straße|strasse|str\\.|weg|gasse|platz|allee|damm|straat|laan|gracht|plein|steeg|vej|gade|gatan|vägen"

# "X(?<!Y.)" reads "X, not preceded by Y": with X first, `re` skips fast to where X can start.
PATTERNS: list[tuple[str, str]] = [  # (kind, regex); earlier kinds win ties between equal-length spans
    (
        "URL_CREDENTIALS",
        r"[A-Za-z](?<![\w+.-].)[\w+.-]{0,15}://[^\s:/@]{1,256}:[^\s/@]{1,256}@[^\s<>\"']{1,2000}(?<![.,;:!?)\]'\"])",
    ),
    ("EMAIL", r"[\w.%+-](?<![\w.%+-].)[\w.%+-]{0,63}@[\w-]{1,63}(?:\.[\w-]{1,63}){0,8}\.[^\W\d_]{2,24}(?![\w-]|\.\w)"),
    ("IBAN", r"[A-Z](?<!\w.)[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?!\w)"),
    ("CARD", r"\d(?<![\w-].)(?:\d{3}([ -]?)\d{4}\1\d{4}\1\d{1,7}|\d{3}([ -]?)\d{6}\2\d{4,5})(?!\w|-\d)"),
    ("SSN", r"[0-8](?<![\w-].)\d\d(?<!000)(?<!666)-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])"),
    ("IP", r"\d(?<![\w.].)\d{0,2}(?:\.\d{1,3}){3}(?!\w|\.\d)"),
    ("IP", r"[0-9A-Fa-f:](?<![\w:.].)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,8}(?![\w:])"),
    ("POSTCODE", r"[A-Z](?<!\w.)(?:IR 0AA|[A-Z]?\d[A-Z\d]? \d[A-Z]{2})\b"),
    ("POSTCODE", r"\d(?<![\w-].)\d{4}-\d{4}(?![\w-])"),
    ("POSTCODE", r"[A-Z](?<!\w.)[A-Z],? (?P<v>\d{5})(?![\w-])"),  # "CA 94107": state checked in _check
    ("PHONE", r"\+(?<![\w+].)(?>\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,6})(?!\w)"),
    ("PHONE", r"\((?<![\w.+-].)\d{3}\) ?\d{3}[ .-]\d{4}(?!\w|[.-]\d)"),
    ("PHONE", r"\d(?<![\w.+-].)(?:(?<=1)[ .-](?:\(\d{3}\) ?|\d{3}[ .-])|\d\d[ .-])\d{3}[ .-]\d{4}(?!\w|[.-]\d)"),
    ("PHONE", r"0(?<![\w.+/:-].)(?!00)(?>\d{1,4}(?:[ .-]?\d{2,8}){1,4})(?!\w|[.:/-]\d)"),
    (
        "ADDRESS",
        (
            rf"\d(?<!\w.)\d{{0,4}}[A-Za-z]?(?:-\d{{1,5}})?,? (?:[{UP}][\w'’.-]{{0,30}} "
            rf"){{1,4}}(?:{STREET})\b\.?(?: (?:NE|NW|SE|SW|N|S|E|W)\b)?"
        ),
    ),
    (
        "ADDRESS",
        (
            rf"\d(?<!\w.)\d{{0,4}}(?: ?bis| ?ter|[a-zA-Z])?,? (?i:{FRENCH}) {PARTICLES}[{UP}][\w'’-]{{0,30}}(?: "
            rf"[{UP}][\w'’-]{{0,30}}){{0,3}}"
        ),
    ),
    (
        "ADDRESS",
        (
            rf"\b(?:Via|Viale|Piazza|Corso|Calle|Avenida|Plaza|Paseo|Carrer|Rua|Rue) "
            rf"{PARTICLES}[{UP}][\w'’-]{{0,30}}(?: [{UP}][\w'’-]{{0,30}}){{0,2}},? \d{{1,5}}[a-z]?\b"
        ),
    ),
    ("ADDRESS", rf"[{UP}](?<!\w.)(?:[\w-]{{0,30}} [{UP}])?[\w-]{{0,30}}?[ -]?(?i:{GERMANIC}) ?\d{{1,4}}[a-z]?\b"),
    ("PERSON", rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Lady|Lord|Herr|Frau|Mme|Mlle)\.? {NAMES}"),
    ("PERSON", rf"\b(?i:my|his|her|their|our|your) (?i:{RELATIONS}),? {NAMES}"),
    ("PERSON", rf"\b(?i:my name is|my name's|i['’]m|i am|call me) {NAMES}"),
]
COMPILED = [(kind, re.compile(p)) for kind, p in PATTERNS]
RANK = {kind: i for i, (kind, _) in reversed(list(enumerate(PATTERNS)))}
PLACEHOLDER = re.compile(r"\[([A-Za-z]+(?:_[A-Za-z]+)*_\d+)\]")


@dataclass(frozen=True)
class Span:
    kind: str
    start: int
    end: int
    text: str


@dataclass
class Redaction:
    text: str
    mapping: dict[str, str]  # placeholder -> original
    spans: list[Span]

    def counts(self) -> dict[str, int]:
        """Kind -> number of occurrences redacted."""
        return dict(Counter(s.kind for s in self.spans))


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _iban(s: str) -> bool:
    s = s.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def _ipv6(s: str) -> bool:
    if sum(1 for g in s.split(":") if g) < 3:
        return False  # "::1", "a::b" and times like 12:30 are not worth a placeholder
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def _ipv4(s: str, text: str, start: int) -> bool:
    try:
        ipaddress.IPv4Address(s)  # octets 0-255, no leading zeros
    except ValueError:
        return False
    return not re.search(r"(?i)\b(?:v|version|release|build)\s*$", text[max(0, start - 12) : start])


def _person(words: str) -> str:
    """The name words up to the first common word ("" when the first one is common)."""
    kept = []
    for w in words.split(" "):
        if w.lower() in COMMON:
            break
        kept.append(w)
    return " ".join(kept)


def _check(kind: str, m: re.Match[str], text: str) -> tuple[int, int] | None:
    """The span to report for a regex match, or None when the match is not personal data."""
    start, end = m.span("v") if "v" in m.re.groupindex else m.span()
    s = text[start:end]
    digits = re.sub(r"\D", "", s)
    if kind == "POSTCODE" and "v" in m.re.groupindex and m.group()[:2] not in STATES:
        return None
    if kind == "CARD" and not _luhn(digits):
        return None
    if kind == "IBAN" and not _iban(s):
        return None
    if kind == "IP" and not (_ipv6(s) if ":" in s else _ipv4(s, text, start)):
        return None
    if kind == "PHONE" and not (7 <= len(digits) <= 15 and (s[0] != "0" or len(digits) >= 9)):
        return None
    if kind == "PERSON" and "v" in m.re.groupindex:  # a cue's name, not one the caller knows
        name = _person(s)
        intro = m.group().lower().startswith(("i'm", "i’m", "i am"))
        if not name or intro and name.lower().endswith(("ing", "ful", "ous", "ive", "able", "ible")):
            return None
        end = start + len(name)
    return start, end


def _names_pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    words = sorted({n.strip() for n in names if n and n.strip()}, key=len, reverse=True)
    if not words:
        return None
    alts = "|".join(r"\s+".join(re.escape(part) for part in w.split()) for w in words)
    return re.compile(rf"(?<!\w)(?:{alts})(?!\w)", re.IGNORECASE)


def find(text: str, names: Iterable[str] = ()) -> list[Span]:
    """Spans of personal data, sorted, non-overlapping (the longer wins, then the more specific kind)."""
    found: list[tuple[str, int, int]] = []
    patterns: list[tuple[str, re.Pattern[str]]] = list(COMPILED)
    known = _names_pattern(names)
    if known is not None:
        patterns.append(("PERSON", known))
    for kind, rx in patterns:
        for m in rx.finditer(text):
            span = _check(kind, m, text)
            if span is not None:
                found.append((kind, *span))
    found.sort(key=lambda f: (f[1] - f[2], RANK[f[0]], f[1]))
    taken: list[tuple[int, int, str]] = []  # accepted spans, kept sorted by position
    for kind, start, end in found:
        i = bisect.bisect_left(taken, (start, end, kind))
        if (i and taken[i - 1][1] > start) or (i < len(taken) and taken[i][0] < end):
            continue
        taken.insert(i, (start, end, kind))
    return [Span(kind, start, end, text[start:end]) for start, end, kind in taken]


def redact(text: str, names: Iterable[str] = (), mapping: dict[str, str] | None = None) -> Redaction:
    """Replace each span with "[KIND_n]"; the same original value always gets the same placeholder.
    Pass the `mapping` of an earlier call to keep numbering across texts (it is extended in place)."""
    spans = find(text, names)
    mapping = {} if mapping is None else mapping
    given: dict[tuple[str, str], str] = {}
    per_kind: Counter[str] = Counter()
    for placeholder, original in mapping.items():
        kind = placeholder[1:-1].rsplit("_", 1)[0]
        given[(kind, original)] = placeholder
        per_kind[kind] += 1
    out: list[str] = []
    pos = 0
    for span in spans:
        key = (span.kind, span.text)
        if key not in given:
            per_kind[span.kind] += 1
            given[key] = f"[{span.kind}_{per_kind[span.kind]}]"
            mapping[given[key]] = span.text
        out += [text[pos : span.start], given[key]]
        pos = span.end
    out.append(text[pos:])
    return Redaction("".join(out), mapping, spans)


def restore(text: str, mapping: dict[str, str]) -> str:
    """Put the originals back where a reply echoes placeholders (any letter case); unknown ones stay."""
    return PLACEHOLDER.sub(lambda m: mapping.get(f"[{m.group(1).upper()}]", m.group()), text)
