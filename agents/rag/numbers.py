"""Numbers as digits for the LLM, and as words for keyword search and answer checks.

People write knowledge with numbers as words ("forty-five dollars", "half past seven", "open nine to
five"); a small LLM reading "seventy" sometimes says "7", so `to_digits` hands it "70". Callers' speech
arrives either way ("45" or "forty five"), so `searchable_words` spells the figures out again for the
keyword index, and `digits_in` lets the eval compare an answer's figures with the facts'.

Pure regular expressions, applied in order: day names, number words, times, money. Every rule leaves
its own output alone, so `to_digits` is idempotent.
"""

from __future__ import annotations

import re

_SMALL_TEXT = """zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen"""
SMALL_NAMES = _SMALL_TEXT.split()
TENS_NAMES = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_VALUES = {word: n for n, word in enumerate(SMALL_NAMES)} | {w: 10 * n for n, w in enumerate(TENS_NAMES)}
# number_words spells figures below this; larger ones (account numbers, populations) nobody says aloud.
MAX_SPOKEN = 1_000_000

# Nouns that make "one" (and a hyphenated "ten-minute") a quantity: "one hour", "a one-day rental".
UNIT_WORDS = (
    r"(?:second|minute|hour|day|night|week|month|year|dollar|pound|euro|cent|penny|pence|percent"
    r"|mile|kilometre|kilometer|km|metre|meter|inch|inche|foot|feet|kilo|kilogram|kg|litre|liter)s?"
)
# Words before an hour that make the next number a time of day ("at one", "until seven thirty").
TIME_PREPOSITIONS = r"(?:at|until|till|from|by|before|after)"
# Words after a number that make it a time of day.
TIME_MARKERS = r"(?:[ap]\.?m\b\.?|o['’]clock\b|in\s+the\s+(?:morning|afternoon|evening)\b|at\s+night\b)"
# "N at night" is pm for these hours; "2 at night" (2 am? a shift's second hour?) is left as written.
NIGHT_HOURS = range(6, 12)
# A "one" after a time preposition is an hour only when the clause ends or goes on like this
# ("open until one on Fridays"); otherwise it is a pronoun ("at one of our shops", "at one point").
_ONE_CLAUSE_GOES_ON = r"(?:\s*(?:[^\w\s]|$)|\s+(?:on|and|or|every|sharp|today|tomorrow|daily)\b)"


def _alt(words: list[str]) -> str:
    return "|".join(sorted(words, key=len, reverse=True))  # longest first: "seventeen" before "seven"


_U, _TEEN, _D = _alt(SMALL_NAMES[1:10]), _alt(SMALL_NAMES[10:]), _alt(TENS_NAMES[2:])
_NUMWORD = rf"(?:{_alt([*SMALL_NAMES, *TENS_NAMES[2:], 'hundred', 'thousand', 'dozen'])})\b"
_BELOW_100 = rf"(?:(?:{_D})(?:[- ](?:{_U}))?|{_TEEN}|{_U})"
_BELOW_1000 = rf"(?:(?:{_BELOW_100}|a)\s+hundred(?:\s+(?:and\s+)?{_BELOW_100})?|{_BELOW_100})"
_NUMBER = re.compile(
    rf"(?<![\w-])(?:(?:{_BELOW_1000}|a)\s+thousand(?:\s+(?:and\s+)?{_BELOW_1000})?"
    rf"|(?:{_BELOW_100}|(?<!half\s)a)\s+dozen|{_BELOW_1000}|zero)\b"
    # not the first half of an ordinal or compound ("twenty-first", "two-for-one"), except a unit
    # ("ten-minute"); not cut short of a larger number ("five hundred and nine hundred")
    rf"(?!-(?!{UNIT_WORDS}\b)[a-z])(?!\s+(?:hundred|thousand|dozen)\b)",
    re.IGNORECASE,
)
_ONE_AFTER = re.compile(
    rf"[\s-]+{UNIT_WORDS}\b|\s*{TIME_MARKERS}|\s*(?:-|–|to|or|and)?\s*(?:\d|{_NUMWORD})", re.IGNORECASE
)
_ONE_AFTER_RANGE = re.compile(rf"(?:\d|\b{_NUMWORD})\s*(?:-|–|to|or|and)\s*$", re.IGNORECASE)
_ONE_AFTER_PREPOSITION = re.compile(rf"\b(?:{TIME_PREPOSITIONS}|past|quarter\s+to)\s+$", re.IGNORECASE)

_DAYS = {"Mon": "Monday", "Tue": "Tuesday", "Tues": "Tuesday", "Wed": "Wednesday", "Weds": "Wednesday"}
_DAYS |= {"Thu": "Thursday", "Thur": "Thursday", "Thurs": "Thursday", "Fri": "Friday"}
_DAYS |= {"Sat": "Saturday", "Sun": "Sunday"}
_DAY = _alt(list(_DAYS))
_DAY_RANGE = re.compile(rf"\b({_DAY})\s*[-–—]\s*({_DAY})\b")
# Only where a schedule goes on after it: "Sat 9am", "Sun: closed", but not "Sat on the bench".
_DAY_ABBREVIATION = re.compile(rf"\b({_DAY})\b(?=\s*(?:[-–—:,.;/&)]|\d|$)|\s+(?:and|to|through|closed)\b)")

_HOUR = r"(?<![\w:.,$£€])(1[0-2]|0?[1-9])"
_NOON = re.compile(r"\b(?:12\s+)?(noon|midday|midnight)\b", re.IGNORECASE)
_HALF_QUARTER = re.compile(
    rf"\b(half|(?:a\s+)?quarter)\s+(past|after|to)\s+{_HOUR}\b(?![:.]\d)", re.IGNORECASE
)
_OCLOCK = re.compile(rf"{_HOUR}\s*o['’]clock\b", re.IGNORECASE)
_HOUR_MINUTES = re.compile(rf"{_HOUR}\s+([0-5]\d)\b(?![:.,]\d)")
_TIME_BEFORE = re.compile(
    rf"(?:\b{TIME_PREPOSITIONS}|\bfrom\s+[\d:\s]+(?:[ap]m\s+)?(?:to|until|till))\s+$", re.IGNORECASE
)
_DAYPART = re.compile(
    rf"{_HOUR}(:[0-5]\d)?\s+(?:in\s+the\s+(morning|afternoon|evening)|at\s+(night))\b", re.IGNORECASE
)
# The full stop of "a.m." is kept as the sentence's own when the sentence may end there.
_AM_PM = re.compile(
    rf"{_HOUR}(?:[.:]([0-5]\d))?\s*([ap])(?:m\b|\.m\b(?:\.(?-i:(?=\s+[a-z0-9]|[,;)])))?)", re.IGNORECASE
)

_CURRENCY = {"dollar": "$", "pound": "£", "euro": "€"}
_CURRENCY_NAMES = {symbol: name for name, symbol in _CURRENCY.items()}
_MONEY = re.compile(
    r"(?<![\w$£€.,])(\d{1,3}(?:,\d{3})+|\d+)(\.\d\d)?\s+(dollar|pound|euro)s?\b"
    r"(?:\s+(?:and\s+)?(\d{1,2})\s+cents?\b|\s+(\d\d)\b(?![.,:]?\d|\s*%))?",
    re.IGNORECASE,
)
_WEIGHT_BEFORE = re.compile(r"\bweigh\w*\s+(?:\w+\s+)?$", re.IGNORECASE)

_FIGURE = re.compile(r"(?<![\w.,:])[$£€]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:[.:]\d+)?%?(?![\w:]|[.,]\d)")
_PHONE = re.compile(r"\(?\b\d{3}\)?[\s.-]?\d{3}[\s.-]\d{4}\b")


def to_digits(text: str) -> str:
    """The text with numbers written as words turned into digits, times and prices in one form
    ("half past seven" → "7:30", "nine in the evening" → "9 pm", "forty-five dollars" → "$45",
    "Mon–Fri" → "Monday to Friday"); everything else, digits already there included, exactly as it was."""
    text = _DAY_RANGE.sub(lambda m: f"{_DAYS[m[1]]} to {_DAYS[m[2]]}", text)
    text = _DAY_ABBREVIATION.sub(lambda m: _DAYS[m[1]], text)
    text = _NUMBER.sub(_number, text)
    text = _NOON.sub(lambda m: "12 am" if m[1].lower() == "midnight" else "12 pm", text)
    text = _HALF_QUARTER.sub(_half_quarter, text)
    text = _OCLOCK.sub(lambda m: f"{int(m[1])}:00", text)
    text = _HOUR_MINUTES.sub(_hour_minutes, text)
    text = _DAYPART.sub(_daypart, text)
    text = _AM_PM.sub(lambda m: f"{int(m[1])}{':' + m[2] if m[2] else ''} {m[3].lower()}m", text)
    return _MONEY.sub(_money, text)


def _number(m: re.Match[str]) -> str:
    phrase = m[0]
    if phrase.lower() == "one" and not _one_is_a_number(m.string, m.start(), m.end()):
        return phrase
    total = current = 0
    for word in re.split(r"[\s-]+", phrase.lower()):
        if word == "hundred":
            current = (current or 1) * 100
        elif word == "thousand":
            total, current = total + (current or 1) * 1000, 0
        elif word == "dozen":
            current = (current or 1) * 12
        else:
            current += _VALUES.get(word, 0)  # "and" and "a" add nothing; "a" stands for 1 in the scales
    return str(total + current)


def _one_is_a_number(text: str, start: int, end: int) -> bool:
    """Whether "one" is a quantity ("one hour", "one to five", "at one.") rather than a pronoun
    ("no one", "one of our", "the one")."""
    before, after = text[:start], text[end:]
    if _ONE_AFTER.match(after) or _ONE_AFTER_RANGE.search(before):
        return True
    return bool(_ONE_AFTER_PREPOSITION.search(before) and re.match(_ONE_CLAUSE_GOES_ON, after))


def _half_quarter(m: re.Match[str]) -> str:
    part, direction, hour = m[1].lower(), m[2].lower(), int(m[3])
    if part == "half" and direction == "to":
        return m[0]
    if direction == "to":
        return f"{hour - 1 or 12}:45"
    return f"{hour}:{'30' if part == 'half' else '15'}"


def _hour_minutes(m: re.Match[str]) -> str:
    """ "7 30" is a time only where a time is expected: "at 7 30", "7 30 pm"."""
    if re.match(rf"\s*{TIME_MARKERS}", m.string[m.end() :], re.IGNORECASE) or _TIME_BEFORE.search(
        m.string[: m.start()]
    ):
        return f"{int(m[1])}:{m[2]}"
    return m[0]


def _daypart(m: re.Match[str]) -> str:
    hour = int(m[1])
    if m[4] and hour not in NIGHT_HOURS:
        return m[0]
    return f"{hour}{m[2] or ''} {'am' if m[3] and m[3].lower() == 'morning' else 'pm'}"


def _money(m: re.Match[str]) -> str:
    whole, decimals, unit, cents = m[1], m[2] or "", m[3].lower(), m[4] or m[5]
    if unit == "pound" and (
        _WEIGHT_BEFORE.search(m.string[: m.start()]) or m.string[m.end() :].startswith(" of")
    ):
        return m[0]  # "weighs 20 pounds", "5 pounds of coffee"
    return f"{_CURRENCY[unit]}{whole}{decimals or (f'.{int(cents):02d}' if cents else '')}"


def _cardinal(n: int) -> str:
    if n < 20:
        return SMALL_NAMES[n]
    if n < 100:
        return TENS_NAMES[n // 10] + (f"-{SMALL_NAMES[n % 10]}" if n % 10 else "")
    big, rest, scale = (n // 1000, n % 1000, "thousand") if n >= 1000 else (n // 100, n % 100, "hundred")
    return f"{_cardinal(big)} {scale}" + (f" {_cardinal(rest)}" if rest else "")


def number_words(value: str) -> str:
    """How a figure in digits is said: "45" → "forty-five", "7:30" → "seven thirty", "$45" →
    "forty-five dollars", "12.50" → "twelve fifty", "20%" → "twenty percent". "" for anything else
    (codes with a leading zero, figures of a million and more, three decimals)."""
    m = re.fullmatch(r"([$£€]?)(\d{1,3}(?:,\d{3})+|\d+)(?:([.:])(\d\d))?(%?)", value.strip())
    if not m:
        return ""
    symbol, digits, separator, fraction, percent = m[1], m[2].replace(",", ""), m[3], m[4], m[5]
    if (len(digits) > 1 and digits.startswith("0")) or int(digits) >= MAX_SPOKEN:
        return ""
    if separator == ":" and (int(digits) > 23 or int(fraction) > 59):
        return ""
    words = [_cardinal(int(digits))]
    if symbol:
        words.append(_CURRENCY_NAMES[symbol] + ("" if int(digits) == 1 else "s"))
    if fraction and fraction != "00":
        words.append(f"oh {SMALL_NAMES[int(fraction)]}" if fraction[0] == "0" else _cardinal(int(fraction)))
    return " ".join(words + (["percent"] if percent else []))


def searchable_words(text: str) -> str:
    """The spoken words of every figure in the text (after `to_digits`), de-duplicated, in order, for
    the keyword index: "$45 a day" → "forty-five dollars". Phone numbers are skipped. "" if none."""
    spoken: list[str] = []
    for m in _FIGURE.finditer(_PHONE.sub(" ", to_digits(text))):
        words = number_words(m[0])
        if words and words not in spoken:
            spoken.append(words)
    return " ".join(spoken)


def digits_in(text: str) -> set[str]:
    """The figures in the text (after `to_digits`), normalised so that the same value written two ways
    compares equal: "$45.00" → "45", "1,200" → "1200", "9:00" and "9 am" → "9", "7:30" stays."""
    values = set()
    for m in _FIGURE.finditer(to_digits(text)):
        value = m[0].lstrip("$£€").rstrip("%").replace(",", "")
        if ":" in value:
            hour, minutes = value.split(":", 1)
            value = str(int(hour)) if minutes.strip("0") == "" else f"{int(hour)}:{minutes}"
        elif "." in value:
            value = value.rstrip("0").rstrip(".")
        values.add(value)
    return values
