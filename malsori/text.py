"""The one text normalizer shared by data preparation, training targets and scoring.

`normalize` turns written text into the words a speaker would say, lower-case, without punctuation:
"It's 7:30 and I owe $5.20 (21st time!)" → "it's seven thirty and i owe five dollars twenty cents twenty first time".
Rules are tables and small regex rewrites applied in a fixed order; pure Python, no locale data.
"""

from __future__ import annotations

import re
import unicodedata

ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
# short scale: 10**3, 10**6, ... ; larger numbers are read digit by digit
SCALES = [
    "", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion",
    "sextillion", "septillion", "octillion", "nonillion", "decillion",
]
# cardinal word → ordinal word, for the irregular ones; the rest add "th" (twenty → twentieth via "y" → "ieth")
ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth",
    "eight": "eighth", "nine": "ninth", "twelve": "twelfth",
}
# currency symbol → (singular, plural) of the unit and of its hundredth
CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", "sen", "sen"),
    "₩": ("won", "won", "jeon", "jeon"),
}
# symbols read as words (applied after numbers, so "5%" and "$5" are handled first)
SYMBOLS = {
    "&": " and ", "@": " at ", "%": " percent ", "+": " plus ", "=": " equals ",
    "°": " degrees ", "#": " number ", "×": " times ", "½": " one half ",
}
# a few abbreviations, only when written with their dot
ABBREVIATIONS = {"mr.": "mister", "mrs.": "missus", "dr.": "doctor", "vs.": "versus", "etc.": "etcetera"}
# fraction denominators read as words
DENOMINATORS = {2: ("half", "halves"), 3: ("third", "thirds"), 4: ("quarter", "quarters")}
# characters NFKC leaves alone but that are only typographic variants
TYPOGRAPHY = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "´": "'", "–": "-", "—": "-", "−": "-"})


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(TENS[n // 10])
        n %= 10
        if n:
            words.append(ONES[n])
    elif n or not words:
        words.append(ONES[n])
    return words


def number_to_words(n: int) -> str:
    """Cardinal words for an integer, short scale, no "and".

    1234567 → "one million two hundred thirty four thousand five hundred sixty seven"; beyond the scale
    table (10**36) the digits are read one by one.
    """
    if n < 0:
        return "minus " + number_to_words(-n)
    if n == 0:
        return "zero"
    if n >= 1000 ** len(SCALES):
        return digits_to_words(str(n))
    groups: list[int] = []
    while n:
        n, g = divmod(n, 1000)
        groups.append(g)
    words: list[str] = []
    for scale, g in reversed(list(enumerate(groups))):
        if g:
            words += _below_thousand(g) + ([SCALES[scale]] if scale else [])
    return " ".join(words)


def ordinal_to_words(n: int) -> str:
    """Ordinal words: 21 → "twenty first", 100 → "one hundredth"."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in ORDINAL_IRREGULAR:
        words[-1] = ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_to_words(n: int) -> str:
    """A year as spoken: 1990 → "nineteen ninety", 1905 → "nineteen oh five", 2005 → "two thousand five",
    2024 → "twenty twenty four"."""
    hi, lo = divmod(n, 100)
    if n % 1000 < 10:  # 2005 → two thousand five
        return number_to_words(n)
    if lo == 0:
        return number_to_words(hi) + " hundred"
    return number_to_words(hi) + " " + (("oh " + ONES[lo]) if lo < 10 else number_to_words(lo))


def digits_to_words(digits: str) -> str:
    """Read a digit string one digit at a time: "007" → "zero zero seven"."""
    return " ".join(ONES[int(d)] for d in digits if d.isdigit())


def _int_words(s: str) -> str:
    """An integer as written (maybe with thousands commas); leading zeros are read digit by digit."""
    s = s.replace(",", "")
    if len(s) > 1 and s.startswith("0"):
        return digits_to_words(s)
    return number_to_words(int(s))


def _decimal_words(s: str) -> str:
    whole, _, frac = s.replace(",", "").partition(".")
    out = _int_words(whole) if whole else "zero"
    return out + (" point " + digits_to_words(frac) if frac else "")


def _money(m: re.Match) -> str:
    unit, units, sub, subs = CURRENCIES[m.group("cur")]
    whole, frac, scale = m.group("whole"), m.group("frac"), m.group("scale")
    if scale:  # "$1.5 million" → "one point five million dollars"
        return f" {_decimal_words(whole + ('.' + frac if frac else ''))} {scale} {units} "
    n = int(whole.replace(",", ""))
    cents = int((frac + "0")[:2]) if frac else 0
    parts = []
    if n or not cents:
        parts.append(f"{number_to_words(n)} {unit if n == 1 else units}")
    if cents:
        parts.append(f"{number_to_words(cents)} {sub if cents == 1 else subs}")
    return " " + " ".join(parts) + " "


def _time(m: re.Match) -> str:
    h, mins, ampm = int(m.group("h")), int(m.group("m")), m.group("ampm")
    if mins == 0:
        spoken = number_to_words(h) + ("" if ampm else " o'clock")
    elif mins < 10:
        spoken = f"{number_to_words(h)} oh {ONES[mins]}"
    else:
        spoken = f"{number_to_words(h)} {number_to_words(mins)}"
    return f" {spoken} {_ampm(ampm)} " if ampm else f" {spoken} "


def _ampm(s: str) -> str:
    return " ".join(c for c in s.lower() if c.isalpha())  # "p.m." → "p m"


def _fraction(m: re.Match) -> str:
    num, den = int(m.group(1)), int(m.group(2))
    if den in DENOMINATORS:
        name = DENOMINATORS[den][num != 1]
    elif 5 <= den <= 20:
        name = ordinal_to_words(den) + ("s" if num != 1 else "")
    else:
        return f" {number_to_words(num)} over {number_to_words(den)} "
    return f" {number_to_words(num)} {name} "


def _decade_words(s: str) -> str:
    n = int(s)
    return year_to_words(n) if len(s) == 4 and 1100 <= n <= 2099 else number_to_words(n)


def _plural(words: str) -> str:
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _year_or_number(m: re.Match) -> str:
    n = int(m.group(0))
    return f" {year_to_words(n) if 1100 <= n <= 2099 else number_to_words(n)} "


_NUM = r"\d{1,3}(?:,\d{3})+|\d+"  # 1,234,567 or 1234567
# (pattern, replacement) rewrites, in order; each turns one kind of written number or symbol into words
RULES: list[tuple[re.Pattern, object]] = [
    # money: $5.20, £3, €1.5 million
    (re.compile(rf"(?P<cur>[$£€¥₩])\s?(?P<whole>{_NUM})(?:\.(?P<frac>\d+))?"
                rf"(?:\s?(?P<scale>thousand|million|billion|trillion)\b)?"), _money),
    # clock times: 7:30, 07:05 pm, 12:00
    (re.compile(r"\b(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?:\s?(?P<ampm>[ap]\.?m\.?)(?![a-z]))?"), _time),
    # hour with am/pm: 7pm, 11 a.m.
    (re.compile(r"\b(\d{1,2})\s?([ap]\.?m\.?)(?![a-z])"),
     lambda m: f" {number_to_words(int(m.group(1)))} {_ampm(m.group(2))} "),
    # decades: 1990s, 80s, '90s → "nineteen nineties", "eighties"
    (re.compile(r"'?\b(\d{1,3}0)'?s\b"), lambda m: f" {_plural(_decade_words(m.group(1)))} "),
    # ordinals: 1st, 22nd, 103rd, 4th
    (re.compile(r"\b(\d+)(?:st|nd|rd|th)\b"), lambda m: f" {ordinal_to_words(int(m.group(1)))} "),
    # percentages: 12.5% → "twelve point five percent"
    (re.compile(r"(\d+(?:\.\d+)?)\s?%"), lambda m: f" {_decimal_words(m.group(1))} percent "),
    # simple fractions: 1/2, 3/4
    (re.compile(r"\b(\d{1,2})/(\d{1,2})\b"), _fraction),
    # negative numbers at a word start: -5 → minus five
    (re.compile(r"(?<![\w.])-(?=\d)"), " minus "),
    # decimals: 3.14, .5
    (re.compile(rf"(?:{_NUM})?\.\d+"), lambda m: f" {_decimal_words(m.group(0))} "),
    # four-digit numbers read as years (1100–2099), other plain numbers as cardinals
    (re.compile(r"(?<![\d,])\d{4}(?![\d,])"), _year_or_number),
    (re.compile(_NUM), lambda m: f" {_int_words(m.group(0))} "),
]
_ABBREV = re.compile(r"(?<!\w)(" + "|".join(re.escape(a) for a in ABBREVIATIONS) + r")(?=\s|$)")
_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")  # b7x2 → b 7 x 2
_NOT_WORD = re.compile(r"[^\w']+|_")
_STRAY_APOSTROPHE = re.compile(r"(?<!\w)'+|'+(?!\w)")  # keep only apostrophes inside a word


def normalize(text: str) -> str:
    """Written text → spoken words: NFKC, lower-case, numbers/money/times/symbols as words, no punctuation
    except apostrophes inside words."""
    text = unicodedata.normalize("NFKC", text).translate(TYPOGRAPHY).lower()
    text = _ABBREV.sub(lambda m: f" {ABBREVIATIONS[m.group(1)]} ", text)
    if any(c.isdigit() for c in text):
        # ordinals and am/pm glue digits to letters, so split letter-digit runs only after those rules have run
        for pattern, repl in RULES[:5]:
            text = pattern.sub(repl, text)
        text = _LETTER_DIGIT.sub(" ", text)
        for pattern, repl in RULES[5:]:
            text = pattern.sub(repl, text)
    for sym, words in SYMBOLS.items():
        text = text.replace(sym, words)
    text = _NOT_WORD.sub(" ", text)
    text = _STRAY_APOSTROPHE.sub(" ", text)
    return " ".join(text.split())
