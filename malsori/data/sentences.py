"""Sentences to synthesize: a seeded template grammar written for malsori, and a reader for the user's text files.

The grammar has several domains (numbers, device commands, weather, conversation, spelled codes, navigation,
shopping); templates are strings with `{slot}` names and `[a|b]` choices, slots draw from word lists or
small functions (times, money, years …). Written forms mix digits and words on purpose, so the shared
normalizer (malsori.text) is exercised by every consumer.
"""

from __future__ import annotations

import gzip
import os
import random
import re
from pathlib import Path
from typing import Callable, Iterable

from malsori.errors import ConfigError, MalsoriError
from malsori.text import normalize, number_to_words, ordinal_to_words

Slot = list[str] | Callable[[random.Random], str]


def _words(s: str) -> list[str]:
    return [w.strip() for w in s.split(",") if w.strip()]


NAMES = _words(
    "Alice, Ben, Carlos, Diana, Emma, Fatima, George, Hannah, Ivan, Julia, Kevin, Laura, Mohammed, Nina, Oliver, "
    "Priya, Quinn, Rachel, Sam, Tom, Uma, Victor, Wendy, Xavier, Yuki, Zoe, Mark, Sarah, David, Maria, James, Linda, "
    "Peter, Grace, Daniel, Sophie, Lucas, Chloe, Noah, Mia, Ethan, Ava, Leo, Ruby, Omar, Leila, Minjun, Jiwoo, "
    "Hiroshi, Chen, Anna, Paul, Kate, Jack, Lily, Henry, Ella, Max, Rosa, Felix"
)
CITIES = _words(
    "London, Paris, Tokyo, Seoul, New York, Chicago, Boston, Sydney, Toronto, Berlin, Madrid, Rome, Lisbon, Dublin, "
    "Edinburgh, Cairo, Nairobi, Mumbai, Delhi, Beijing, Shanghai, Singapore, Bangkok, Jakarta, Manila, Mexico City, "
    "Lima, Santiago, Buenos Aires, Vancouver, Seattle, Denver, Austin, Miami, Atlanta, Phoenix, Oslo, Stockholm, "
    "Helsinki, Copenhagen, Amsterdam, Brussels, Vienna, Prague, Warsaw, Athens, Istanbul, Busan, Glasgow, Kingston"
)
ROOMS = _words(
    "kitchen, living room, bedroom, bathroom, garage, hallway, office, basement, dining room, nursery, attic, "
    "porch, laundry room, guest room, study"
)
DEVICES = _words(
    "lights, lamp, fan, heater, air conditioner, television, radio, speaker, coffee maker, dishwasher, "
    "washing machine, oven, kettle, alarm, sprinkler, vacuum cleaner, humidifier, projector, printer, fireplace"
)
GENRES = _words("jazz, rock, classical, hip hop, country, reggae, blues, pop, folk, soul, techno, piano, dance")
TASKS = _words(
    "buy milk, call the dentist, water the plants, take out the trash, pick up the kids, pay the electricity bill, "
    "feed the cat, walk the dog, book a table, send the report, check the mail, charge my phone, lock the front door, "
    "renew my passport, return the library books, clean the windows, order more coffee, fix the bike, call grandma, "
    "bake a cake, email the landlord, stretch, drink some water, start the laundry, move the car, pack my lunch"
)
WEEKDAYS = _words("Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday")
MONTHS = _words("January, February, March, April, May, June, July, August, September, October, November, December")
WHEN = _words(
    "today, tomorrow, tonight, this morning, this afternoon, this evening, this weekend, next week, later, right now"
) + [f"on {d}" for d in WEEKDAYS] + [f"on {d} [morning|afternoon|evening|night]" for d in WEEKDAYS]
WEATHER_ADJ = _words(
    "sunny, cloudy, rainy, windy, foggy, cold, warm, hot, humid, chilly, stormy, clear, snowy, dry, mild, freezing"
)
PRECIP = _words("rain, snow, hail, sleet, thunderstorms, showers, drizzle")
GREETINGS = _words("hi, hello, hey, good morning, good afternoon, good evening")
RELATIVES = _words(
    "mother, father, sister, brother, aunt, uncle, cousin, grandmother, grandfather, neighbor, friend, boss, "
    "colleague, roommate, teacher, son, daughter, husband, wife, nephew, niece"
)
VERBS_PAST = _words(
    "bought, found, lost, borrowed, fixed, painted, sold, cooked, broke, cleaned, ordered, forgot, returned, "
    "wrapped, moved, hid"
)
ADJECTIVES = _words(
    "red, blue, green, yellow, black, white, old, new, small, big, heavy, wooden, broken, shiny, cheap, expensive, "
    "tiny, huge, soft, warm, strange, lovely, quiet, noisy, bright, dark, tall, short, purple, orange, silver, golden"
)
THINGS = _words(
    "chair, table, lamp, bicycle, jacket, umbrella, suitcase, backpack, guitar, piano, camera, phone, laptop, clock, "
    "mirror, painting, vase, basket, blanket, pillow, teapot, bottle, box, book, notebook, pencil, ladder, hammer, "
    "bucket, sofa, rug, wallet, hat, scarf, sweater, shirt, dress, radio, bowl, plate, kite, drum, map, candle"
)
FOODS = _words(
    "apples, bananas, oranges, grapes, strawberries, lemons, potatoes, carrots, onions, tomatoes, cucumbers, peppers, "
    "mushrooms, rice, pasta, bread, cheese, butter, milk, eggs, yogurt, chicken, beef, fish, tofu, noodles, soup, "
    "salad, pizza, sandwiches, cookies, cake, chocolate, coffee, tea, juice, honey, cereal, beans, peanuts, kimchi, "
    "dumplings, pancakes, olives, garlic, spinach, avocados, cherries, peaches, almonds"
)
UNITS = _words("bags, boxes, bottles, cans, jars, kilos, pounds, packs, cartons, bunches, loaves, slices")
VENUES = _words(
    "museum, library, bank, pharmacy, post office, supermarket, bakery, cinema, gym, swimming pool, zoo, "
    "restaurant, cafe, bookstore, market, hospital, school, theater, stadium, hotel"
)
ACTIVITIES = _words(
    "go for a walk, watch a movie, have dinner, visit the museum, play tennis, go swimming, cook together, "
    "clean the house, go shopping, read for a while, take a break, go to the beach, play cards, plant some flowers"
)
STREET_NAMES = _words(
    "Oak, Maple, Pine, Elm, Cedar, Main, High, Park, Church, Market, Station, River, Lake, Hill, Mill, Bridge, King, "
    "Queen, Victoria, Washington, Lincoln, Jefferson, Madison, Franklin, Sunset, Harbor, Garden, Spring"
)
STREET_TYPES = _words("Street, Road, Avenue, Lane, Drive, Boulevard, Way, Place, Court")
POIS = _words(
    "gas station, pharmacy, hospital, supermarket, bank, post office, coffee shop, restaurant, parking lot, "
    "train station, bus stop, airport, library, museum, hotel, park, school, gym, bakery, bookstore, cinema, beach"
)
CLOTHES = _words("shirt, jacket, dress, sweater, coat, scarf, skirt, hat, pair of shoes, pair of jeans, pair of gloves")
EVENTS = _words("party, concert, meeting, wedding, lecture, game, festival, workshop, conference, picnic")
COLORS = _words("red, blue, green, yellow, black, white, purple, orange, grey, brown, pink, navy, beige")
CODE_LETTERS = list("BCDEFGHJKLMNPQRSTUVWXYZ")  # no A, I, O: they read as words ("a", "I", "oh")


def _a_adj(rng: random.Random) -> str:
    adj = rng.choice(ADJECTIVES)
    return ("an " if adj[0] in "aeiou" else "a ") + adj


def _number(rng: random.Random, lo: int, hi: int) -> str:
    """A number written as digits or as words, at random."""
    n = rng.randint(lo, hi)
    return str(n) if rng.random() < 0.6 else number_to_words(n)


def _time(rng: random.Random) -> str:
    h, m = rng.randint(1, 12), rng.choice([0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, rng.randint(0, 59)])
    style = rng.randrange(5)
    if style == 0:
        return f"{h}:{m:02d}"
    # "pm" but no "am": its normalized "a m" would be spoken by eSpeak as the article "a"
    if style == 1:
        return f"{h}:{m:02d} {rng.choice(['pm', 'p.m.', 'in the morning', 'in the evening'])}"
    if style == 2:
        return f"{h} pm"
    if style == 3:
        before = rng.choice(["half past", "quarter past", "quarter to", "ten past", "twenty to"])
        return f"{before} {number_to_words(h)}"
    return rng.choice(["noon", "midnight", f"{number_to_words(h)} o'clock"])


def _money(rng: random.Random) -> str:
    cur = rng.choice(["$", "$", "£", "€"])
    whole = rng.choice([rng.randint(1, 20), rng.randint(20, 500), rng.randint(500, 20000)])
    if rng.random() < 0.5:
        return f"{cur}{whole:,}" if whole >= 1000 and rng.random() < 0.5 else f"{cur}{whole}"
    if rng.random() < 0.2:
        return f"{number_to_words(whole)} {rng.choice(['dollars', 'pounds', 'euros'])}"
    return f"{cur}{whole}.{rng.randint(1, 99):02d}"


def _year(rng: random.Random) -> str:
    return str(rng.choice([rng.randint(1900, 1999), rng.randint(2000, 2030), rng.randint(1500, 1899)]))


def _day(rng: random.Random) -> str:
    d = rng.randint(1, 31)
    if rng.random() < 0.3:
        return ordinal_to_words(d)
    return f"{d}{'th' if 10 <= d % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(d % 10, 'th')}"


def _ordinal_word(rng: random.Random) -> str:
    return ordinal_to_words(rng.randint(1, 12))


def _digits(rng: random.Random, lo: int = 3, hi: int = 7) -> str:
    return " ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(lo, hi)))


def _code(rng: random.Random) -> str:
    n = rng.randint(3, 7)
    return " ".join(rng.choice(CODE_LETTERS) if rng.random() < 0.45 else str(rng.randint(0, 9)) for _ in range(n))


def _percent(rng: random.Random) -> str:
    n = rng.choice([rng.randint(1, 100), rng.randint(1, 99) + rng.choice([0.5, 0.25])])
    return f"{n}%" if rng.random() < 0.7 else f"{n} percent"


def _duration(rng: random.Random) -> str:
    unit = rng.choice(["minutes", "minutes", "seconds", "hours"])
    n = _number(rng, 2, 90 if unit != "hours" else 12)
    return f"{n} {unit}"


def _temperature(rng: random.Random) -> str:
    return _number(rng, 15, 30) if rng.random() < 0.6 else _number(rng, 55, 95)


def _count(rng: random.Random) -> str:
    n = rng.choice([rng.randint(2, 20), rng.randint(20, 1000), rng.randint(1000, 5_000_000)])
    return f"{n:,}" if n >= 1000 and rng.random() < 0.5 else str(n)


# slot name → word list or generator function
SLOTS: dict[str, Slot] = {
    "name": NAMES, "city": CITIES, "room": ROOMS, "device": DEVICES, "genre": GENRES, "task": TASKS,
    "weekday": WEEKDAYS, "month": MONTHS, "when": WHEN, "wadj": WEATHER_ADJ, "precip": PRECIP,
    "greeting": GREETINGS, "relative": RELATIVES, "verb_past": VERBS_PAST, "adj": ADJECTIVES, "thing": THINGS,
    "food": FOODS, "unit": UNITS, "venue": VENUES, "activity": ACTIVITIES, "poi": POIS, "clothes": CLOTHES,
    "event": EVENTS, "color": COLORS, "a_adj": _a_adj,
    "street": lambda r: f"{r.choice(STREET_NAMES)} {r.choice(STREET_TYPES)}",
    "time": _time, "money": _money, "year": _year, "day": _day, "ordinal": _ordinal_word, "digits": _digits,
    "code": _code, "percent": _percent, "duration": _duration, "temp": _temperature, "count": _count,
    "small": lambda r: _number(r, 2, 12), "num": lambda r: _number(r, 1, 100),
    "distance": lambda r: f"{_number(r, 1, 9) if r.random() < 0.5 else _number(r, 100, 900)} "
    f"{r.choice(['miles', 'kilometers', 'meters', 'feet']) if r.random() < 0.5 else 'meters'}",
}

# domain → templates; "[a|b]" picks one alternative, "{slot}" fills from SLOTS
TEMPLATES: dict[str, list[str]] = {
    "numbers": [
        "It costs {money}.", "The total comes to {money}.", "I paid {money} for the {adj} {thing}.",
        "The meeting is at {time}.", "The train leaves at {time} on {weekday}.", "My birthday is on {month} {day}.",
        "She was born in {year}.", "We moved to {city} in {year}.", "There were {count} people at the {event}.",
        "The population of {city} is about {count}.", "What is {num} [plus|minus|times] {num}?",
        "The temperature dropped to -{small} degrees.", "The score was {small} to {small}.",
        "Interest rates rose to {percent} last year.", "Add {small} [cups|spoons] of {food}.",
        "Please turn to page {num}.", "The {event} starts on {month} {day} at {time}.",
        "Prices went up by {percent} in {year}.", "It's {time} in {city} right now.",
        "The bill was {money} including tip.", "My flat is on the {ordinal} floor.",
    ],
    "commands": [
        "[Turn|Switch] [on|off] the {room} {device}.", "Turn the {device} in the {room} [on|off].",
        "Set a timer for {duration}.", "Set an alarm for {time}.", "Set the thermostat to {temp} degrees.",
        "Play some {genre} music in the {room}.", "Dim the {room} lights to {percent}.",
        "Remind me to {task} at {time}.", "Remind me to {task} {when}.", "Call {name}.", "Call my {relative}.",
        "Turn the volume [up|down].", "Set the volume to {small}.", "[Open|Close] the {room} blinds.",
        "Is the {room} {device} still on?", "Cancel the timer.", "Pause the music.", "Skip this song.",
        "Send a message to {name} saying I'll be late.", "Add {task} to my to do list.",
        "Start the {device} in {duration}.", "Lock the {room} door.", "What's on my calendar {when}?",
    ],
    "weather": [
        "What's the weather like in {city} {when}?",
        "Will it [rain|snow|hail|be windy|be sunny|be foggy|freeze] in {city} {when}?",
        "Do I need an umbrella {when}?", "How [hot|cold|warm] will it be {when}?",
        "It will be {wadj} and {wadj} in {city} {when}.",
        "{when} in {city} expect {precip} and a high of {temp} degrees.",
        "There is a {percent} chance of {precip} {when}.", "Is it {wadj} in {city} right now?",
        "The forecast for {weekday} is {wadj} with a low of {temp}.", "What's the temperature outside?",
        "When will the {precip} stop?", "It's going to be {wadj} all week in {city}.",
    ],
    "conversation": [
        "{greeting}, {name}, how are you [today|doing|feeling]?", "I'm going to {activity} with {name} {when}.",
        "My {relative} {verb_past} {a_adj} {thing} yesterday.", "Could you pass me the {thing}, please?",
        "I think we should {activity} {when}.", "What time does the {venue} open {when}?",
        "{name} said the {thing} was too {adj}.", "I really like {food}, but {name} prefers {food}.",
        "Sorry, I didn't catch that, could you say it again?", "Have you met my {relative}, {name}?",
        "Let's meet at the {venue} {when}.", "I can't find my {thing} anywhere.", "Thank you so much, {name}.",
        "Where did you put the {adj} {thing}?",
        "We had {food} for [breakfast|lunch|dinner] [yesterday|last night|on {weekday}].",
        "My {relative} lives in {city}.", "Do you want to {activity} {when}?", "That was {a_adj} {event}!",
        "{name} and {name} went to {city} last [summer|winter|spring|autumn].",
    ],
    "codes": [
        "My code is {code}.", "The confirmation number is {code}.", "Please enter {digits}.",
        "Your verification code is {digits}.", "The license plate is {code}.", "Flight {code} is delayed.",
        "The wifi password is {code}.", "Room {digits}, please.", "My order number is {code}.",
        "The serial number is {code}.", "Call me back on {digits} {digits}.", "My locker code is {digits}.",
    ],
    "navigation": [
        "Take the {ordinal} exit.", "Turn [left|right] onto {street}.", "Navigate to {street}.",
        "How long does it take to get to {city}?", "Find the nearest {poi}.", "In {distance}, turn [left|right].",
        "Avoid toll roads.", "Is there traffic on {street}?", "The {poi} is on {street}.",
        "Show me the way to the {poi}.", "How far is the {poi} from here?", "Keep [left|right] at the fork.",
        "Drive to {name}'s house.", "Go straight for {distance}.", "Take me home.",
    ],
    "shopping": [
        "Add {small} {unit} of {food} to my shopping list.", "I need {small} {unit} of {food}.",
        "How much are the {food}?", "Do you have this {clothes} in {color}?", "I'd like to return this {thing}.",
        "Can I pay by card?", "Where can I find the {food}?", "Is the {thing} on sale?",
        "Two {unit} of {food} and some {food}, please.", "The {thing} costs {money}.",
        "Do you deliver to {city}?", "I'll take the {adj} one.", "Can I try on this {clothes}?",
    ],
}
DOMAINS = list(TEMPLATES)
_CHOICE = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{(\w+)\}")


def _expand(template: str, rng: random.Random) -> str:
    text = _CHOICE.sub(lambda m: rng.choice(m.group(1).split("|")), template)
    for _ in range(3):  # slot values may contain choices and slots themselves
        text = _SLOT.sub(lambda m: _fill(m.group(1), rng), text)
        text = _CHOICE.sub(lambda m: rng.choice(m.group(1).split("|")), text)
    return text[0].upper() + text[1:]


def _fill(slot: str, rng: random.Random) -> str:
    value = SLOTS[slot]
    return value(rng) if callable(value) else rng.choice(value)


def generate_sentences(n: int, seed: int, domains: list[str] | None = None) -> list[tuple[str, str]]:
    """`n` distinct (domain, sentence) pairs, reproducible for a seed; distinct means distinct after `normalize`."""
    domains = list(domains or DOMAINS)
    unknown = [d for d in domains if d not in TEMPLATES]
    if unknown:
        raise ConfigError(f"unknown sentence domain(s) {', '.join(unknown)} (known: {', '.join(DOMAINS)})")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    # domains take turns, so each gets its share; a domain that stops giving new sentences drops out
    open_domains = list(domains)
    while len(out) < n and open_domains:
        domain = open_domains[len(out) % len(open_domains)]
        for _ in range(200):
            sentence = _expand(rng.choice(TEMPLATES[domain]), rng)
            key = normalize(sentence)
            if key not in seen:
                seen.add(key)
                out.append((domain, sentence))
                break
        else:
            open_domains.remove(domain)
    if len(out) < n:
        raise ConfigError(f"domains {', '.join(domains)} gave only {len(out)} distinct sentences of the {n} asked for")
    return out


def read_text_sentences(
    paths: Iterable[str | os.PathLike], strict: bool = False, skipped: list[str] | None = None
) -> list[str]:
    """Sentences from UTF-8 text files (`.txt` or `.txt.gz`), one a line; empty lines are ignored.

    Lines that are not UTF-8 or have no speakable words are skipped (each noted as "file:line: reason" in
    `skipped` when given), or raise with `strict`.
    """
    out: list[str] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise MalsoriError(f"{path}: text file not found")
        opener = gzip.open if path.name.endswith(".gz") else open
        try:
            with opener(path, "rb") as f:
                lines = f.read().splitlines()
        except (OSError, EOFError) as e:
            raise MalsoriError(f"{path}: cannot read text file ({e})") from None
        for lineno, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8").lstrip("\ufeff").strip()
            except UnicodeDecodeError as e:
                reason = f"{path}:{lineno}: not UTF-8 (byte {e.start})"
            else:
                if not line:
                    continue
                if normalize(line):
                    out.append(line)
                    continue
                reason = f"{path}:{lineno}: no speakable words"
            if strict:
                raise MalsoriError(reason)
            if skipped is not None:
                skipped.append(reason)
    return out
