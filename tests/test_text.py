"""The shared text normalizer: numbers, money, times, symbols, punctuation."""

import json
from pathlib import Path

import pytest

from malsori.text import normalize, number_to_words, ordinal_to_words, year_to_words

CASES = [
    # plain text, casing, punctuation, apostrophes
    ("Hello, World!", "hello world"),
    ("MARK IS GOING TO SEE ELEPHANT", "mark is going to see elephant"),
    ("zero", "zero"),
    ("Don't 'quote' the dogs' toys.", "don't quote the dogs toys"),
    ("It’s fine", "it's fine"),
    ("  lots   of\tspace\n", "lots of space"),
    ("(parens) [brackets] {braces} -- dashes — and… ellipsis", "parens brackets braces dashes and ellipsis"),
    ("ＦＵＬＬＷＩＤＴＨ １２", "fullwidth twelve"),
    ("café naïve", "café naïve"),
    # integers
    ("I have 3 cats", "i have three cats"),
    ("0", "zero"),
    ("13 17 40 99", "thirteen seventeen forty ninety nine"),
    ("100", "one hundred"),
    ("101", "one hundred one"),
    ("1,000,000", "one million"),
    ("123456", "one hundred twenty three thousand four hundred fifty six"),
    ("7000000000", "seven billion"),
    ("007", "zero zero seven"),
    ("-5 degrees", "minus five degrees"),
    # decimals, percent, fractions
    ("3.5", "three point five"),
    ("pi is 3.14", "pi is three point one four"),
    ("0.25", "zero point two five"),
    ("50%", "fifty percent"),
    ("12.5 %", "twelve point five percent"),
    ("1/2 cup", "one half cup"),
    ("3/4", "three quarters"),
    ("2/3", "two thirds"),
    # ordinals
    ("21st", "twenty first"),
    ("the 2nd and 3rd", "the second and third"),
    ("4th 11th 12th 13th 20th", "fourth eleventh twelfth thirteenth twentieth"),
    ("100th 101st", "one hundredth one hundred first"),
    # years and decades
    ("in 1990", "in nineteen ninety"),
    ("1905", "nineteen oh five"),
    ("1900", "nineteen hundred"),
    ("2000", "two thousand"),
    ("2005", "two thousand five"),
    ("2024", "twenty twenty four"),
    ("the 1990s", "the nineteen nineties"),
    ("the 80s and '90s", "the eighties and nineties"),
    # times
    ("7:30", "seven thirty"),
    ("7:05", "seven oh five"),
    ("7:00", "seven o'clock"),
    ("7:30 pm", "seven thirty p m"),
    ("11 a.m. sharp", "eleven a m sharp"),
    ("7pm", "seven p m"),
    # money
    ("$5.20", "five dollars twenty cents"),
    ("$1", "one dollar"),
    ("$0.50", "fifty cents"),
    ("$1.01", "one dollar one cent"),
    ("£3", "three pounds"),
    ("€2.50", "two euros fifty cents"),
    ("$1.5 million", "one point five million dollars"),
    ("$1,200", "one thousand two hundred dollars"),
    # symbols and letter-digit codes
    ("R&D", "r and d"),
    ("me@home", "me at home"),
    ("C++", "c plus plus"),
    ("#1", "number one"),
    ("20°C", "twenty degrees c"),
    ("my code is b7x2", "my code is b seven x two"),
    ("My code is B 7 X 2.", "my code is b seven x two"),
    ("mp3", "mp three"),
    ("Mr. Smith vs. Dr. Who", "mister smith versus doctor who"),
    ("", ""),
    ("!!! ???", ""),
]


@pytest.mark.parametrize("written, spoken", CASES)
def test_normalize(written, spoken):
    assert normalize(written) == spoken


def test_normalize_is_idempotent():
    for written, _ in CASES:
        once = normalize(written)
        assert normalize(once) == once


def test_number_to_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(15) == "fifteen"
    assert number_to_words(-17) == "minus seventeen"
    assert number_to_words(1_000_001) == "one million one"
    assert number_to_words(10**12 + 1) == "one trillion one"
    assert number_to_words(999_999) == "nine hundred ninety nine thousand nine hundred ninety nine"
    # beyond the scale table: digit by digit rather than an error
    assert number_to_words(10**40).split()[:2] == ["one", "zero"]
    # every number below 10000 gives distinct words with no digits
    words = {number_to_words(n) for n in range(10000)}
    assert len(words) == 10000 and not any(c.isdigit() for w in words for c in w)


def test_ordinals_and_years():
    assert ordinal_to_words(1) == "first"
    assert ordinal_to_words(30) == "thirtieth"
    assert ordinal_to_words(1_000_000) == "one millionth"
    assert year_to_words(1100) == "eleven hundred"
    assert year_to_words(2010) == "twenty ten"


def test_output_has_only_words():
    text = "On 3/4/2021 at 10:45pm, 25.5% of 1,234 people paid $3.99 (#2 & @home)."
    out = normalize(text)
    assert out == out.lower() and not any(c.isdigit() for c in out)
    assert all(c.isalpha() or c in " '" for c in out)


SHARED = Path("/work/shared/data")


@pytest.mark.skipif(not SHARED.exists(), reason="shared speech data not present")
def test_real_corpus_transcripts_normalize_cleanly():
    for subset in ("speechocean762_test_sample", "fsdd"):
        path = SHARED / subset / "manifest.jsonl"
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines()[:300]:
            text = json.loads(line)["text"]
            out = normalize(text)
            assert out and out == out.lower() and not any(c.isdigit() for c in out)
            assert out.split() == text.lower().split() or subset != "fsdd"  # fsdd words pass through unchanged
