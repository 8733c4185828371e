"""Numbers in knowledge text: digits for the LLM (`to_digits`), words for keyword search
(`number_words`, `searchable_words`), and figures compared between an answer and the facts (`digits_in`)."""

from __future__ import annotations

import pytest

from agents.rag.numbers import digits_in, number_words, searchable_words, to_digits

KNOWLEDGE_SENTENCES = [
    (
        "Renting an e-bike costs forty-five dollars a day, and a city bike twenty-five.",
        "Renting an e-bike costs $45 a day, and a city bike 25.",
    ),
    (
        "We open at half past seven on Thursdays and close at nine in the evening.",
        "We open at 7:30 on Thursdays and close at 9 pm.",
    ),
    ("No one under sixteen may rent on their own.", "No one under 16 may rent on their own."),
    (
        "Late returns incur fines of twenty-five cents a day, up to a maximum of five dollars.",
        "Late returns incur fines of 25 cents a day, up to a maximum of $5.",
    ),
    (
        "Mon–Fri 8am–6pm, Sat 9am–5pm, Sun closed.",
        "Monday to Friday 8 am–6 pm, Saturday 9 am–5 pm, Sunday closed.",
    ),
    ("A full service is seventy dollars and takes one day.", "A full service is $70 and takes 1 day."),
    (
        "Flat tyres are usually fixed in about twenty minutes.",
        "Flat tyres are usually fixed in about 20 minutes.",
    ),
    ("The station is a ten-minute walk.", "The station is a 10-minute walk."),
    ("Weekly hire is two hundred and twenty dollars.", "Weekly hire is $220."),
    ("We're open nine to five on Saturdays.", "We're open 9 to 5 on Saturdays."),
    ("On Christmas Eve we close early, at 2 pm. Between Christmas and New Year", None),
    ("Open from eight a.m. on weekdays.", "Open from 8 am on weekdays."),
    ("Open until one on Fridays.", "Open until 1 on Fridays."),
    ("Drop-offs after five in the afternoon are checked in at a quarter to nine.", None),
]


@pytest.mark.parametrize(("text", "expected"), KNOWLEDGE_SENTENCES)
def test_knowledge_sentences_get_their_figures_in_digits(text: str, expected: str | None) -> None:
    if expected is None:
        expected = text.replace("five in the afternoon", "5 pm").replace("a quarter to nine", "8:45")
    assert to_digits(text) == expected


@pytest.mark.parametrize(
    ("words", "digits"),
    [
        ("forty-five", "45"),
        ("forty five", "45"),
        ("Forty-five", "45"),
        ("seventy", "70"),
        ("sixteen", "16"),
        ("one hundred and twenty", "120"),
        ("one hundred twenty", "120"),
        ("two thousand five hundred", "2500"),
        ("twenty five hundred", "2500"),
        ("zero", "0"),
        ("two dozen", "24"),
    ],
)
def test_number_words_become_digits(words: str, digits: str) -> None:
    assert to_digits(words) == digits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("forty-five dollars", "$45"),
        ("one dollar", "$1"),
        ("a hundred dollars", "$100"),
        ("twelve dollars fifty", "$12.50"),
        ("twelve dollars and fifty cents", "$12.50"),
        ("ninety-five pounds", "£95"),
        ("ten euros", "€10"),
        ("twenty-five cents", "25 cents"),
        ("45 dollars", "$45"),
    ],
)
def test_money_takes_its_currency_sign(text: str, expected: str) -> None:
    assert to_digits(text) == expected


def test_pounds_of_weight_are_not_money() -> None:
    assert to_digits("The e-bike weighs about fifty pounds.") == "The e-bike weighs about 50 pounds."
    assert to_digits("five pounds of grease") == "5 pounds of grease"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("half past seven", "7:30"),
        ("quarter past nine", "9:15"),
        ("quarter to six", "5:45"),
        ("a quarter to one", "12:45"),
        ("half past one", "1:30"),
        ("nine o'clock", "9:00"),
        ("noon", "12 pm"),
        ("twelve noon", "12 pm"),
        ("midday", "12 pm"),
        ("midnight", "12 am"),
        ("8am", "8 am"),
        ("8.30pm", "8:30 pm"),
        ("8:30 PM", "8:30 pm"),
        ("nine in the morning", "9 am"),
        ("five in the evening", "5 pm"),
        ("five in the afternoon", "5 pm"),
        ("ten at night", "10 pm"),
        ("eight a.m. sharp", "8 am sharp"),
        ("one pm", "1 pm"),
        ("open at seven thirty", "open at 7:30"),
        ("seven thirty in the evening", "7:30 pm"),
        ("from seven thirty to five thirty", "from 7:30 to 5:30"),
    ],
)
def test_times_of_day_take_one_form(text: str, expected: str) -> None:
    assert to_digits(text) == expected


def test_a_sentence_ending_in_am_keeps_its_full_stop() -> None:
    assert to_digits("We open at eight a.m.") == "We open at 8 am."
    assert to_digits("We open at 8 a.m. Come early.") == "We open at 8 am. Come early."
    assert to_digits("We close at 2 pm. Between Christmas and New Year") == (
        "We close at 2 pm. Between Christmas and New Year"
    )


def test_two_numbers_side_by_side_are_not_a_time_without_a_time_context() -> None:
    assert to_digits("Sizes seven thirty and forty.") == "Sizes 7 30 and 40."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mon–Fri", "Monday to Friday"),
        ("Mon-Fri", "Monday to Friday"),
        ("Tues and Thurs 9am", "Tuesday and Thursday 9 am"),
        ("Weds: late opening", "Wednesday: late opening"),
        ("Sat 9am–5pm", "Saturday 9 am–5 pm"),
    ],
)
def test_day_abbreviations_are_spelled_out(text: str, expected: str) -> None:
    assert to_digits(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Sat on the bench outside.",
        "Sun cream is sold at the counter.",
        "mon ami",
        "Monday to Friday",
    ],
)
def test_words_that_only_look_like_day_abbreviations_stay(text: str) -> None:
    assert to_digits(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("one hour", "1 hour"),
        ("a one-day rental", "a 1-day rental"),
        ("one hundred", "100"),
        ("We close at one.", "We close at 1."),
        ("one to five", "1 to 5"),
        ("one or two days", "1 or 2 days"),
        ("from five to one", "from 5 to 1"),
    ],
)
def test_one_becomes_1_as_a_quantity(text: str, expected: str) -> None:
    assert to_digits(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "No one can book for you.",
        "Ask one of our mechanics.",
        "Pick the one with the basket.",
        "Which one?",
        "We met at one of our shops.",
        "It is a one-off charge.",
        "Get one free with a two-for-one deal.",
    ],
)
def test_one_as_a_pronoun_stays(text: str) -> None:
    assert to_digits(text) == text


def test_a_and_an_are_numbers_only_before_hundred_thousand_dozen() -> None:
    assert to_digits("a hundred and fifty bikes") == "150 bikes"
    assert to_digits("a thousand riders") == "1000 riders"
    assert to_digits("a dozen helmets") == "12 helmets"
    assert to_digits("a bike and an e-bike") == "a bike and an e-bike"
    assert to_digits("half a dozen") == "half a dozen"


@pytest.mark.parametrize(
    "text",
    [
        "Call (555) 014-2290 during opening hours.",
        "In 1998 we opened our first shop.",
        "Juniper Street Bikes, 214 Juniper Street, Millbrook.",
        "Bus route 12 stops outside the library.",
        "Closed on Independence Day (July 4th).",
        "It costs $9,000 a day.",
        "Open until 7:30 pm on Thursdays.",
        "We are on the twenty-first floor, the third door.",
        "Every new bike includes a free check-up within the first months.",
        "Changed your mind?  It's fine, honestly.",
    ],
)
def test_text_without_number_words_is_left_exactly_as_it_was(text: str) -> None:
    assert to_digits(text) == text


def test_numbers_inside_other_words_are_not_numbers() -> None:
    text = "Often someone tends to phone; nobody's bones ate tenths."
    assert to_digits(text) == text


def test_a_larger_number_is_not_cut_short() -> None:
    assert to_digits("between five hundred and nine hundred") == "between 500 and 900"


@pytest.mark.parametrize(
    "text",
    [text for text, _ in KNOWLEDGE_SENTENCES]
    + ["eight a.m.", "twelve dollars fifty", "at one thirty", "half past one in the morning", "Mon–Fri"],
)
def test_to_digits_is_idempotent(text: str) -> None:
    once = to_digits(text)
    assert to_digits(once) == once


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("45", "forty-five"),
        ("7", "seven"),
        ("120", "one hundred twenty"),
        ("2500", "two thousand five hundred"),
        ("1,200", "one thousand two hundred"),
        ("7:30", "seven thirty"),
        ("7:05", "seven oh five"),
        ("9:00", "nine"),
        ("$45", "forty-five dollars"),
        ("$1", "one dollar"),
        ("£95", "ninety-five pounds"),
        ("12.50", "twelve fifty"),
        ("$12.50", "twelve dollars fifty"),
        ("20%", "twenty percent"),
    ],
)
def test_number_words_says_a_figure(value: str, words: str) -> None:
    assert number_words(value) == words


@pytest.mark.parametrize("value", ["", "abc", "014", "7:75", "12.505", "1000000", "45th"])
def test_number_words_is_empty_for_what_it_does_not_handle(value: str) -> None:
    assert number_words(value) == ""


def test_searchable_words_spells_out_each_figure_once_in_order() -> None:
    text = "A city bike costs $25 per day, an e-bike forty-five dollars per day; a kids' bike $25 too."
    assert searchable_words(text) == "twenty-five dollars forty-five dollars"


def test_searchable_words_covers_times_and_skips_phone_numbers() -> None:
    text = "Call (555) 014-2290. On Thursday we are open from 8 am to half past seven."
    assert searchable_words(text) == "eight seven thirty"


def test_searchable_words_is_empty_without_figures() -> None:
    assert searchable_words("We do not accept cheques.") == ""


def test_digits_in_normalises_figures() -> None:
    assert digits_in("It's $45.00 a day.") == {"45"}
    assert digits_in("from 9 am to 7:30 pm") == {"9", "7:30"}
    assert digits_in("9:00 and $1,200 and $12.50") == {"9", "1200", "12.5"}
    assert digits_in("No figures here.") == set()


def test_digits_in_matches_an_answer_in_words_against_a_fact_in_digits() -> None:
    answer = "An e-bike is forty-five dollars a day, and we open at nine in the morning."
    fact = "Renting an e-bike costs $45 per day. On Saturday we are open from 9 am to 5 pm."
    assert digits_in(answer) <= digits_in(fact)
    assert digits_in("It costs seventy dollars.").isdisjoint(digits_in("It costs $7."))
