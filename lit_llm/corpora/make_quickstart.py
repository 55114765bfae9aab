"""Deterministic generator for the `quickstart` corpus: little stories from a probabilistic grammar.

The corpus shipped as ``lit_llm/corpora/quickstart.txt`` is this module's output; it is written for
the project (no third-party text) and regenerated with::

    python -m lit_llm.corpora.make_quickstart --out lit_llm/corpora/quickstart.txt --seed 0 --size-kb 300 --stats

Standard library only. All randomness comes from one ``random.Random(seed)`` and every collection is
iterated in a fixed order, so the output is byte-for-byte reproducible for a given (seed, size).

The grammar has structure at several levels for a small model to learn: spelling and punctuation,
a/an and plural agreement, he/she/it pronouns that agree with the character they refer to, names
and attributes (colours, objects) re-used consistently inside a story, weather that matches the
season and what a character takes along, animals that make their own sounds and eat their own food,
arithmetic stated in words, days of the week in order, dialogue in quotes, and story-level shapes
(problem, attempts, resolution, moral).
"""
from __future__ import annotations

import argparse
import math
import random
import re
import sys
from collections import Counter
from pathlib import Path

DEFAULT_SEED = 0
DEFAULT_SIZE_KB = 300
BYTES_PER_KB = 1024

# --------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------

GIRLS = [
    "Mia", "Lily", "Emma", "Zoe", "Ava", "Lucy", "Anna", "Sara", "Nora", "Ella", "Ruby", "Maya",
    "Chloe", "Grace", "Hannah", "Ivy", "Julia", "Kate", "Leah", "Molly", "Rosa", "Sophie", "Tara",
    "Wendy", "Amy", "Bella", "Clara", "Daisy", "Eva", "Fiona", "Jenny", "Olive", "Pia", "Nina",
]
BOYS = [
    "Tom", "Ben", "Sam", "Leo", "Jack", "Finn", "Noah", "Oliver", "Lucas", "Henry", "Jake", "Eli",
    "Owen", "Ryan", "Theo", "Adam", "Dan", "Felix", "Hugo", "Kai", "Luke", "Milo", "Nick", "Oscar",
    "Pete", "Ray", "Tim", "Will", "Zack", "Omar", "Ivan", "Arlo", "Ezra", "Jonah",
]
PET_NAMES = [
    "Rex", "Buddy", "Spot", "Pip", "Coco", "Biscuit", "Pepper", "Sunny", "Patch", "Whiskers",
    "Mittens", "Bubbles", "Ziggy", "Nutmeg", "Peanut", "Clover", "Maple", "Toffee", "Button",
    "Pickle", "Muffin", "Dot", "Shadow", "Honey", "Pebble", "Tiny", "Rusty", "Snowy", "Ginger",
]
TEACHERS = [
    ("Miss Brown", "f"), ("Mr. Green", "m"), ("Mrs. Lee", "f"), ("Mr. Park", "m"),
    ("Miss Hill", "f"), ("Mrs. Gray", "f"), ("Mr. Stone", "m"), ("Miss Rose", "f"),
]
PERSONALITY = [
    "kind", "brave", "shy", "curious", "happy", "clever", "friendly", "gentle", "funny", "quiet",
    "cheerful", "busy", "careful", "playful", "polite", "clumsy", "sleepy", "bright", "silly",
]
COLORS = [
    "red", "blue", "green", "yellow", "purple", "orange", "pink", "white", "black", "brown",
    "gray", "golden",
]
HOBBIES = [
    "painting pictures", "reading books", "singing songs", "building tall towers", "climbing trees",
    "drawing animals", "playing in the sand", "looking at the stars", "picking flowers", "dancing",
    "baking cookies", "riding {a.his} bike", "playing the drum", "flying kites", "collecting shells",
    "running races", "telling jokes", "playing hide and seek", "splashing in puddles",
    "watching the birds", "making paper boats", "playing with {a.his} toy trains",
]
HOMES = [
    "in a small house near the woods", "in a yellow house on a quiet street", "in a little town by the sea",
    "in a big city with tall buildings", "on a farm at the edge of the village",
    "in an apartment above a bakery", "in a blue house with a red door", "in a cottage on a green hill",
    "on a busy street near the market", "in an old house with a big garden",
]
# Family members: (word, gender). As a speaker the word is capitalized ("said Mom").
PARENTS = [("mom", "f"), ("dad", "m"), ("grandma", "f"), ("grandpa", "m")]

NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# Countable things: (singular, plural, what happens to some of them (past tense, k = count word)).
COUNTABLES = [
    ("apple", "apples", ["{a.he} ate {k} of them", "{k} of them rolled under the table",
                         "{a.he} gave {k} to {b}"]),
    ("cookie", "cookies", ["{a.he} ate {k} of them", "{a.he} gave {k} to {b}",
                           "the dog ate {k} of them"]),
    ("cherry", "cherries", ["{a.he} ate {k} of them", "a bird took {k} of them"]),
    ("strawberry", "strawberries", ["{a.he} ate {k} of them", "{a.he} gave {k} to {b}"]),
    ("peach", "peaches", ["{a.he} ate {k} of them", "{a.he} gave {k} to {b}"]),
    ("balloon", "balloons", ["{k} of them popped", "{k} of them flew away into the sky"]),
    ("marble", "marbles", ["{k} of them rolled away", "{a.he} gave {k} to {b}"]),
    ("sticker", "stickers", ["{a.he} gave {k} to {b}", "{a.he} put {k} of them on {a.his} book"]),
    ("shell", "shells", ["{k} of them broke", "{a.he} gave {k} to {b}"]),
    ("crayon", "crayons", ["{k} of them broke", "{a.he} gave {k} to {b}"]),
    ("egg", "eggs", ["{k} of them cracked", "{a.he} used {k} of them to make a cake"]),
    ("carrot", "carrots", ["the rabbit ate {k} of them", "{a.he} gave {k} to the pony"]),
    ("flower", "flowers", ["{a.he} gave {k} to {a.his} {parent}", "{k} of them wilted"]),
    ("block", "blocks", ["{k} of them fell off the table", "{a.he} gave {k} to {b}"]),
    ("coin", "coins", ["{a.he} spent {k} of them on a snack", "{k} of them fell into a drain"]),
    ("plum", "plums", ["{a.he} ate {k} of them", "{a.he} gave {k} to {b}"]),
    ("pencil", "pencils", ["{k} of them broke", "{a.he} gave {k} to {b}"]),
    ("box", "boxes", ["{a.he} gave {k} to {b}", "{k} of them fell off the shelf"]),
]
CONTAINERS = [
    ("basket", "baskets"), ("bag", "bags"), ("box", "boxes"), ("plate", "plates"),
    ("jar", "jars"), ("bowl", "bowls"),
]
GROUPABLE = [("egg", "eggs"), ("apple", "apples"), ("cookie", "cookies"), ("plum", "plums"),
             ("marble", "marbles"), ("shell", "shells"), ("cherry", "cherries")]

# Weather: condition, season openers, what a character takes along, and how it pays off later.
WEATHER = {
    "rain": {
        "is": "it was raining",
        "openers": ["One rainy morning", "One wet spring day", "One gray afternoon"],
        "items": [
            ("took", "{c} umbrella", "The {c} umbrella kept {a.him} dry."),
            ("put on", "{c} rain boots", "{a.His} {c} rain boots kept {a.his} feet dry."),
            ("wore", "{c} raincoat", "The {c} raincoat kept {a.him} nice and dry."),
        ],
    },
    "cold": {
        "is": "it was cold",
        "openers": ["One cold morning", "One chilly autumn day", "One frosty morning"],
        "items": [
            ("put on", "warm {c} scarf", "The {c} scarf kept {a.his} neck warm."),
            ("wore", "{c} wool hat", "The {c} wool hat kept {a.his} ears warm."),
            ("put on", "thick {c} coat", "The thick {c} coat kept {a.him} warm."),
        ],
    },
    "sun": {
        "is": "it was sunny",
        "openers": ["One sunny morning", "One warm summer day", "One bright afternoon"],
        "items": [
            ("wore", "{c} sun hat", "The {c} sun hat kept the sun out of {a.his} eyes."),
            ("took", "bottle of cold water", "When {a.he} got thirsty, {a.he} drank the cold water."),
            ("put on", "{c} sunglasses", "{a.His} {c} sunglasses kept the bright light away."),
        ],
    },
    "wind": {
        "is": "it was windy",
        "openers": ["One windy morning", "One breezy autumn day", "One windy afternoon"],
        "items": [
            ("took", "{c} kite", "The wind carried {a.his} {c} kite high into the sky."),
            ("put on", "{c} jacket", "The {c} jacket kept the cold wind away."),
        ],
    },
    "snow": {
        "is": "it was snowing",
        "openers": ["One snowy morning", "One white winter day", "One cold winter morning"],
        "items": [
            ("put on", "{c} mittens", "{a.His} {c} mittens kept {a.his} hands warm."),
            ("took", "{c} sled", "{a.He} rode the {c} sled down the hill again and again."),
            ("put on", "{c} snow boots", "{a.His} {c} snow boots kept {a.his} toes warm."),
        ],
    },
}

# Places: where, which weather fits, what one does there (base form, past form), what one can find.
PLACES = [
    {"name": "the park", "at": "At the park", "weather": ["sun", "wind", "cold", "snow", "rain"],
     "do": [("play on the swings", "played on the swings"), ("feed the ducks", "fed the ducks"),
            ("go down the big slide", "went down the big slide"),
            ("run on the grass", "ran on the grass")],
     "find": ["a shiny coin", "a small blue feather", "a lost glove", "a round stone"]},
    {"name": "the beach", "at": "At the beach", "weather": ["sun", "wind"],
     "do": [("build a sandcastle", "built a big sandcastle"),
            ("splash in the waves", "splashed in the waves"),
            ("look for crabs", "looked for crabs"), ("dig a deep hole", "dug a deep hole")],
     "find": ["a pretty pink shell", "a smooth white stone", "a tiny crab", "an old bottle"]},
    {"name": "the forest", "at": "In the forest", "weather": ["sun", "wind", "cold", "rain"],
     "do": [("walk under the tall trees", "walked under the tall trees"),
            ("listen to the birds", "listened to the birds"),
            ("pick wild berries", "picked wild berries"),
            ("look for squirrels", "looked for squirrels")],
     "find": ["a big pine cone", "a red mushroom", "an empty nest", "a long stick"]},
    {"name": "the garden", "at": "In the garden", "weather": ["sun", "rain", "wind"],
     "do": [("water the flowers", "watered the flowers"),
            ("pick strawberries", "picked strawberries"),
            ("plant some seeds", "planted some seeds"), ("chase butterflies", "chased butterflies")],
     "find": ["a fat worm", "a ladybug", "a little blue egg", "a snail with a striped shell"]},
    {"name": "the farm", "at": "At the farm", "weather": ["sun", "cold", "wind", "rain"],
     "do": [("feed the chickens", "fed the chickens"), ("ride the pony", "rode the pony"),
            ("pet the baby goats", "petted the baby goats"),
            ("help milk the cow", "helped milk the cow")],
     "find": ["a warm brown egg", "a soft white feather", "a tiny kitten in the hay",
              "an old horseshoe"]},
    {"name": "the lake", "at": "At the lake", "weather": ["sun", "wind", "cold"],
     "do": [("throw stones into the water", "threw stones into the water"),
            ("watch the swans", "watched the swans"), ("go fishing", "went fishing"),
            ("sail a toy boat", "sailed a toy boat")],
     "find": ["a flat gray stone", "a green frog", "a white feather", "a lost fishing hook"]},
    {"name": "the hill", "at": "On the hill", "weather": ["wind", "snow", "sun", "cold"],
     "do": [("roll down the grass", "rolled down the grass"),
            ("look at the whole town", "looked at the whole town"),
            ("watch the clouds", "watched the clouds"), ("race to the top", "raced to the top")],
     "find": ["a yellow flower", "a smooth round rock", "a lost red mitten", "a feather"]},
    {"name": "the zoo", "at": "At the zoo", "weather": ["sun", "cold", "wind", "rain"],
     "do": [("see the lions", "saw the lions"), ("watch the monkeys", "watched the monkeys"),
            ("feed the goats", "fed the goats"), ("visit the penguins", "visited the penguins")],
     "find": ["a map of the zoo", "a peacock feather", "a lost ticket", "a shiny button"]},
    {"name": "the library", "at": "At the library", "weather": ["rain", "cold", "snow", "wind"],
     "do": [("read a book about {topic}", "read a book about {topic}"),
            ("listen to a story", "listened to a story"),
            ("look at picture books", "looked at picture books"),
            ("find a book about {topic}", "found a book about {topic}")],
     "find": ["a book about {topic}", "a bookmark shaped like a star", "a lost pencil",
              "a little note inside a book"]},
    {"name": "the market", "at": "At the market", "weather": ["sun", "cold", "wind", "rain"],
     "do": [("buy fresh bread", "bought fresh bread"), ("choose some apples", "chose some apples"),
            ("smell the flowers", "smelled the flowers"), ("taste the cheese", "tasted the cheese")],
     "find": ["a shiny coin", "a lost purse", "a paper bag of plums", "a yellow balloon"]},
    {"name": "the river", "at": "By the river", "weather": ["sun", "wind", "cold"],
     "do": [("watch the boats", "watched the boats"), ("skip stones", "skipped stones"),
            ("look for fish", "looked for fish"), ("sit on the bridge", "sat on the bridge")],
     "find": ["a smooth stone", "a frog on a rock", "a little wooden boat", "a lost shoe"]},
    {"name": "the museum", "at": "At the museum", "weather": ["rain", "cold", "snow"],
     "do": [("see the old dinosaur bones", "saw the old dinosaur bones"),
            ("look at the paintings", "looked at the paintings"),
            ("see a real space rocket", "saw a real space rocket"),
            ("learn about {topic}", "learned about {topic}")],
     "find": ["a small map", "a sticker shaped like a dinosaur", "a lost glove", "a shiny key"]},
    {"name": "the playground", "at": "At the playground", "weather": ["sun", "wind", "cold"],
     "do": [("climb the rope ladder", "climbed the rope ladder"),
            ("spin on the roundabout", "spun on the roundabout"),
            ("play tag with the other children", "played tag with the other children"),
            ("dig in the sandbox", "dug in the sandbox")],
     "find": ["a lost toy car", "a green marble", "a shiny coin", "a little ball"]},
    {"name": "the bakery", "at": "At the bakery", "weather": ["rain", "cold", "snow", "sun"],
     "do": [("buy warm bread", "bought warm bread"), ("watch the baker", "watched the baker"),
            ("choose a cupcake", "chose a cupcake"), ("smell the fresh cakes", "smelled the fresh cakes")],
     "find": ["a cookie shaped like a star", "a lost mitten", "a golden coin", "a paper crown"]},
]

# Facts taught at school / in books. (topic, fact).
TOPICS = [
    ("the sun", "The sun is a star, and it gives us light and heat."),
    ("bees", "Bees make honey from the flowers they visit."),
    ("frogs", "Frogs start their lives as tiny tadpoles."),
    ("the moon", "The moon goes around the Earth."),
    ("plants", "Plants need water and sunlight to grow."),
    ("rainbows", "A rainbow has seven colors."),
    ("butterflies", "A butterfly starts its life as a caterpillar."),
    ("whales", "Whales are the biggest animals in the sea."),
    ("snow", "Snow is made of tiny pieces of ice."),
    ("trees", "Trees give us shade and fresh air."),
    ("owls", "Owls sleep in the day and hunt at night."),
    ("spiders", "A spider has eight legs."),
    ("ants", "Ants work together to build their home."),
    ("penguins", "Penguins cannot fly, but they can swim very well."),
    ("dinosaurs", "Dinosaurs lived a very long time ago."),
    ("the sea", "The water in the sea is salty."),
    ("stars", "Stars are very far away, so they look small."),
    ("birds", "Birds have feathers, and most birds can fly."),
    ("fish", "Fish breathe under water with their gills."),
    ("clouds", "Clouds are made of tiny drops of water."),
]

# Animals: species, sound (or None), favourite food (look for, share), where it lives.
ANIMALS = [
    {"kind": "dog", "sound": "Woof", "food": ("a big bone", "bone"), "home": "in a little house in the yard"},
    {"kind": "cat", "sound": "Meow", "food": ("a bowl of milk", "milk"), "home": "in a warm house by the fire"},
    {"kind": "duck", "sound": "Quack", "food": ("some bread crumbs", "bread crumbs"), "home": "by the pond"},
    {"kind": "cow", "sound": "Moo", "food": ("fresh green grass", "grass"), "home": "on a big farm"},
    {"kind": "owl", "sound": "Hoot", "food": ("a fat beetle", "beetle"), "home": "in a hole in an old tree"},
    {"kind": "frog", "sound": "Ribbit", "food": ("a juicy fly", "fly"), "home": "on a lily pad in the pond"},
    {"kind": "pig", "sound": "Oink", "food": ("some corn", "corn"), "home": "in a muddy pen on the farm"},
    {"kind": "sheep", "sound": "Baa", "food": ("sweet clover", "clover"), "home": "in a green field"},
    {"kind": "lion", "sound": "Roar", "food": ("a big lunch", "lunch"), "home": "in the tall yellow grass"},
    {"kind": "mouse", "sound": "Squeak", "food": ("a piece of cheese", "cheese"), "home": "in a tiny hole in the wall"},
    {"kind": "horse", "sound": "Neigh", "food": ("a crunchy apple", "apple"), "home": "in a red barn"},
    {"kind": "bird", "sound": "Tweet", "food": ("some seeds", "seeds"), "home": "in a nest at the top of a tree"},
    {"kind": "bear", "sound": "Grr", "food": ("some sweet honey", "honey"), "home": "in a dark cave in the mountains"},
    {"kind": "rabbit", "sound": None, "food": ("a crunchy carrot", "carrot"), "home": "in a burrow under the hill"},
    {"kind": "squirrel", "sound": None, "food": ("a big nut", "nut"), "home": "in a tall oak tree"},
    {"kind": "turtle", "sound": None, "food": ("a green leaf", "leaf"), "home": "by the slow river"},
    {"kind": "monkey", "sound": "Ooh ooh", "food": ("a yellow banana", "banana"), "home": "in the jungle"},
    {"kind": "fox", "sound": None, "food": ("some wild berries", "berries"), "home": "in a den at the edge of the forest"},
    {"kind": "goat", "sound": "Maa", "food": ("a pile of hay", "hay"), "home": "on a rocky hill"},
    {"kind": "hedgehog", "sound": None, "food": ("a juicy worm", "worm"), "home": "under a pile of leaves"},
    {"kind": "elephant", "sound": "Toot", "food": ("a bunch of bananas", "bananas"), "home": "near a wide river"},
]
FOOD_SPOTS = [
    "behind the old barn", "under the big oak tree", "next to the blue pond", "on the other side of the hill",
    "near the farmer's house", "by the little bridge", "at the edge of the forest", "in the tall grass",
]
ANIMAL_ADJ = ["little", "big", "fluffy", "small", "young", "old", "tiny", "happy", "spotted", "sleepy",
              "hungry", "clever", "brave", "friendly", "lazy", "curious"]
PET_KINDS = ["dog", "cat", "puppy", "kitten", "rabbit", "hamster", "parrot", "turtle"]
PET_SOUNDS = {"dog": "Woof", "puppy": "Yip", "cat": "Meow", "kitten": "Mew", "parrot": "Hello",
              "rabbit": None, "hamster": None, "turtle": None}
PET_LIKES = [
    "chase {a.his} tail", "sleep in the sun", "play with a ball of string", "hide under the bed",
    "sit by the window", "run in circles", "curl up on the sofa", "play in the leaves",
]
PET_HIDING = [
    ("under the porch", "stuck under the porch"),
    ("inside the garden shed", "asleep on an old blanket in the shed"),
    ("behind the fence", "playing with a butterfly behind the fence"),
    ("inside the laundry basket", "curled up in the warm laundry"),
    ("up in the apple tree", "sitting on a branch and too scared to come down"),
    ("under the car", "hiding from the loud thunder"),
]

TOYS = ["teddy bear", "toy car", "doll", "ball", "robot", "kite", "puppet", "yo-yo", "toy train",
        "spinning top", "drum", "blanket", "toy boat", "dinosaur", "whistle", "hat", "truck",
        "dragon", "rocket", "bunny"]
SEARCH_SPOTS = [
    "under the bed", "in the toy box", "behind the sofa", "in the kitchen", "in the bathtub",
    "under the table", "in the garden", "in the car", "in the closet", "on the porch",
    "behind the door", "in the laundry basket", "under the stairs", "in the sandbox",
]
HIDERS = [
    "The dog had carried it there", "The cat had been sleeping on it",
    "{b} had put it there by mistake", "It must have fallen there", "The wind had blown it there",
    "{a.His} little brother had hidden it there as a joke",
]

SKILLS = [
    ("ride a bike", "fell over", "rode all the way down the street"),
    ("swim", "swallowed some water and coughed", "swam across the pool"),
    ("tie {a.his} shoes", "got the laces all tangled", "tied a perfect bow"),
    ("whistle", "only made a funny sound", "whistled a little song"),
    ("bake a cake", "made a cake that was flat", "baked a tall chocolate cake"),
    ("jump rope", "tripped over the rope", "jumped twenty times without stopping"),
    ("read a long book", "got stuck on the big words", "read the whole book by {a.himself}"),
    ("catch a ball", "dropped it", "caught the ball every time"),
    ("write {a.his} name", "wrote the letters backwards", "wrote {a.his} name neatly"),
    ("climb the big tree", "slipped and slid back down", "climbed to the highest branch"),
    ("skate", "fell on the ice", "skated around the pond"),
    ("play the piano", "pressed the wrong keys", "played a whole song"),
    ("fly a kite", "watched it crash into the grass", "flew the kite above the trees"),
    ("build a sandcastle", "saw it fall down", "built a castle with four towers"),
]
HELPER_WORDS = [
    "Try again. Everyone makes mistakes at first.",
    "Do not give up. You will get better every time.",
    "Go slowly, and keep trying.",
    "I could not do it at first either.",
    "Take a deep breath and try one more time.",
]

SPELL_WORDS = ["cat", "dog", "sun", "hat", "bed", "fish", "frog", "tree", "milk", "book", "star",
               "cake", "duck", "ball", "moon", "boat", "rain", "bird", "ship", "lamp"]

MORALS = {
    "share": ["Sharing is better than fighting.", "It is more fun to play together.",
              "Friends take turns.", "When you share, everyone is happy."],
    "try": ["If you keep trying, you can do hard things.", "Practice makes things easier.",
            "Never give up.", "Mistakes help us learn."],
    "careful": ["It is good to put things back where they belong.",
                "Looking carefully helps you find what you lost.", "Friends help each other look."],
    "kind": ["Being kind makes friends.", "A friend in need is a friend indeed.",
             "Kindness is never wasted.", "Helping others feels good."],
}

# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


class Who:
    """A person or animal, with pronouns that agree with it."""

    _FORMS = {
        "m": ("he", "him", "his", "himself"),
        "f": ("she", "her", "her", "herself"),
        "n": ("it", "it", "its", "itself"),
    }

    def __init__(self, name: str, gender: str):
        self.name = name
        self.gender = gender
        self.he, self.him, self.his, self.himself = self._FORMS[gender]
        self.He, self.Him, self.His = self.he.capitalize(), self.him.capitalize(), self.his.capitalize()

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)


def an(phrase: str) -> str:
    """'a' or 'an' + phrase (the vocabulary avoids the exceptions: hour, unicorn, one...)."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def num(n: int) -> str:
    return NUMBER_WORDS[n]


def count_noun(n: int, sing: str, plur: str) -> str:
    return f"{num(n)} {sing if n == 1 else plur}"


def cap(s: str) -> str:
    """Upper-case the first letter (skipping a leading quote)."""
    for i, ch in enumerate(s):
        if ch.isalpha():
            return s[:i] + ch.upper() + s[i + 1:]
    return s


def fill(template: str, **kw) -> str:
    """Format a template; slot values may themselves hold slots (e.g. "riding {a.his} bike")."""
    out = template
    for _ in range(4):
        if "{" not in out:
            break
        out = out.format(**kw)
    return out


class Story:
    """Collects sentences; every sentence is formatted with the story's roles and capitalized."""

    def __init__(self, rng: random.Random, **roles):
        self.r = rng
        self.roles = dict(roles)
        self.sentences: list[str] = []

    def set(self, **roles) -> None:
        self.roles.update(roles)

    def say(self, template: str) -> None:
        self.sentences.append(cap(fill(template, **self.roles)))

    def pick(self, options):
        return self.r.choice(options)

    def text(self) -> str:
        return " ".join(self.sentences)


def optional(r: random.Random, names: list[str], weights: list[int]) -> set[str]:
    """Which optional blocks a story includes: how many is drawn from `weights` (index = count)."""
    k = r.choices(range(len(weights)), weights=weights, k=1)[0]
    return set(r.sample(names, k))


def new_child(r: random.Random, exclude=()) -> Who:
    while True:
        gender = r.choice("mf")
        name = r.choice(BOYS if gender == "m" else GIRLS)
        if name not in exclude:
            return Who(name, gender)


def new_parent(r: random.Random) -> Who:
    word, g = r.choice(PARENTS)
    return Who(word, g)


def intro(st: Story, who_key: str = "a") -> None:
    """One or two sentences that introduce the main character."""
    a: Who = st.roles[who_key]
    r = st.r
    kind = r.choice(["girl", "little girl"]) if a.gender == "f" else r.choice(["boy", "little boy"])
    adj = r.choice(PERSONALITY)
    st.set(_kind=kind, _adj_kind=an(f"{adj} {kind}"), _hobby=r.choice(HOBBIES),
           _age=num(r.randint(4, 9)), _home=r.choice(HOMES))
    form = r.randrange(5)
    if form == 0:
        st.say("Once upon a time, there was {_adj_kind} named {%s}." % who_key)
    elif form == 1:
        st.say("{%s} was {_adj_kind} who loved {_hobby}." % who_key)
    elif form == 2:
        st.say("There once was {_adj_kind} called {%s}." % who_key)
        st.say("{%s.He} was {_age} years old and loved {_hobby}." % who_key)
    elif form == 3:
        st.say("{%s} was {_age} years old." % who_key)
        st.say("{%s.He} lived with {%s.his} family {_home}." % (who_key, who_key))
    else:
        st.say("Once upon a time, {_home}, there lived {_adj_kind} named {%s}." % who_key)


# --------------------------------------------------------------------------------------------------
# Story types
# --------------------------------------------------------------------------------------------------


def story_outing(r: random.Random) -> str:
    """Weather -> what to take -> a trip with a grown-up -> a find -> the payoff of what was taken."""
    a = new_child(r)
    place = r.choice(PLACES)
    wkey = r.choice(place["weather"])
    w = WEATHER[wkey]
    verb, item, payoff = r.choice(w["items"])
    c = r.choice(COLORS)
    parent = new_parent(r)
    topic = r.choice(TOPICS)[0]
    do_base, do_past = r.choice(place["do"])
    st = Story(r, a=a, p=parent, P=Who(parent.name.capitalize(), parent.gender), c=c,
               place=place["name"], at=place["at"], topic=topic, cond=w["is"],
               item=fill(item, c=c), verb=verb, do_base=do_base, do_past=do_past,
               opener=r.choice(w["openers"]), find=r.choice(place["find"]))
    opt = optional(r, ["intro", "ask", "find"], [1, 5, 4])  # keeps a story to at most 9 sentences
    if "intro" in opt:
        intro(st)
        st.say("{opener}, {a.he} wanted to go to {place}.")
    else:
        st.say("{opener}, {a} wanted to go to {place}.")
    if "ask" in opt:
        st.say('"Can we go to {place} today? I want to {do_base}," {a} asked {a.his} {p}.')
        st.say(r.choice(['"Yes, we can," said {P}.', '"Of course," said {P} with a smile.',
                         '"Yes, but we must be home before dinner," said {P}.']))
    form = r.randrange(3)
    if form == 0:
        st.say("Because {cond}, {a} {verb} {a.his} {item}.")
    elif form == 1:
        st.say("{cond}, so {a} {verb} {a.his} {item}.")
    else:
        st.say("{a} {verb} {a.his} {item} because {cond}.")
    st.say("{at}, {a} and {a.his} {p} {do_past}.")
    if "find" in opt:
        st.say(r.choice(["Then {a.he} found {find}.", "After a while, {a.he} found {find}.",
                         "Suddenly, {a} saw {find} on the ground."]))
        st.say(r.choice(['"Look what I found!" said {a}.', '"Look at this!" {a} shouted.',
                         '"{P}, come and see!" called {a}.']))
    st.say(payoff)
    st.say(r.choice(["When they got home, {a} was tired but happy.",
                     "That night, {a} dreamed about {place}.",
                     '"This was the best day ever," said {a} on the way home.',
                     "{a} could not wait to go back to {place} again.",
                     "On the way home, {a} held {a.his} {p}'s hand and smiled."]))
    return st.text()


def story_lost(r: random.Random) -> str:
    """A loved toy is lost, searched for in two places, and found in a third."""
    a = new_child(r)
    b = new_child(r, exclude=[a.name])
    helper = r.choice([new_parent(r), b])
    spots = r.sample(SEARCH_SPOTS, 3)
    toy = r.choice(TOYS)
    c = r.choice(COLORS)
    st = Story(r, a=a, b=b, c=c, toy=toy, s1=spots[0], s2=spots[1], s3=spots[2],
               h=helper, H=Who(helper.name.capitalize(), helper.gender) if helper is not b else b)
    opt = optional(r, ["intro", "sad", "why"], [2, 5])
    if "intro" in opt:
        intro(st)
    st.say(r.choice(["{a} had {_ctoy} that {a.he} loved very much.",
                     "{a.His} favorite toy was {_ctoy}.",
                     "{a} had {_ctoy}, and {a.he} took it everywhere."])
           .replace("{_ctoy}", an(f"{c} {toy}")))
    st.say(r.choice(["One morning, {a} could not find {a.his} {toy}.",
                     "One day, the {c} {toy} was gone.",
                     "But one evening, {a.his} {toy} was missing."]))
    st.say("{a.He} looked {s1}, but it was not there.")
    st.say(r.choice(["Then {a.he} looked {s2}, but it was not there either.",
                     "{a.He} looked {s2}, but {a.he} could not find it there either."]))
    if "sad" in opt:
        st.say(r.choice(["{a} felt very sad.", "{a} started to cry.", "{a} sat down on the floor."]))
    if helper is b:
        st.say('"Let me help you," said {b}. "Did you look {s3}?"')
    else:
        st.say('"Did you look {s3}?" asked {H}.')
    st.say("{a} looked {s3}, and there was the {c} {toy}!")
    if "why" in opt:
        st.say(fill(r.choice(HIDERS), a=a, b=b if helper is b else f"{a.his} friend {b}") + ".")
    st.say(r.choice(['{a} hugged the {toy} and said, "I will never lose you again."',
                     '"Thank you!" said {a}, and {a.he} gave {H} a big hug.',
                     "From then on, {a} always put the {toy} back on {a.his} shelf.",
                     r.choice(MORALS["careful"])]))
    return st.text()


def story_share(r: random.Random) -> str:
    """Two children want the same thing, quarrel, and take turns or split it."""
    a = new_child(r)
    b = new_child(r, exclude=[a.name])
    at_place, to_place = r.choice([
        ("at the playground", "to the playground"), ("in the park", "to the park"), ("at school", "to school"),
        ("in the backyard", "out to the backyard"), ("at Grandma's house", "to Grandma's house"),
        ("on the beach", "to the beach"), ("in the garden", "out to the garden")])
    grown = r.choice([Who("Mom", "f"), Who("Dad", "m"), Who("Grandma", "f"), Who("Grandpa", "m")]
                     + [Who(n, g) for n, g in TEACHERS[:3]])
    food = r.random() < 0.35
    c = r.choice(COLORS)
    thing = (r.choice(["cookie", "cupcake", "slice of cake", "apple", "sandwich", "muffin", "pancake"])
             if food else r.choice(["bike", "swing", "ball", "kite", "scooter", "toy truck", "wagon",
                                    "jump rope", "drum", "teddy bear"]))
    st = Story(r, a=a, b=b, g=grown, at_place=at_place, to_place=to_place, c=c, thing=thing,
               cthing=thing if food else f"{c} {thing}")
    if r.random() < 0.5:
        st.say("{a} and {b} were best friends.")
    st.say(r.choice(["One day, {a} and {b} were playing {at_place}.",
                     "{a} and {b} went {to_place} together.",
                     "After lunch, {a} and {b} played {at_place}."]))
    if food:
        st.say("There was only one {thing} left, and they both wanted it.")
    else:
        st.say("They both wanted to play with the {cthing}.")
    st.say('"It is mine!" said {a}. "No, it is mine!" said {b}.')
    if r.random() < 0.5:
        st.say(r.choice(["{a} pulled one way, and {b} pulled the other way.",
                         "{b} started to cry, and {a} felt angry.",
                         "They were both very upset."]))
    if food:
        st.say('{g} came over and said, "Why don\'t you share it?"')
        st.say("So they broke the {thing} in half, and each of them had one piece.")
    else:
        st.say('{g} came over and said, "Why don\'t you take turns?"')
        st.say("So {a} played with the {cthing} first, and then it was {b}\'s turn.")
    st.say(r.choice(["They laughed and played together until it was time to go home.",
                     "{a} and {b} learned that " + r.choice(MORALS["share"]).lower()[:-1] + ".",
                     "In the end, they were both happy.", r.choice(MORALS["share"])]))
    return st.text()


def story_learn(r: random.Random) -> str:
    """Wanting a skill, failing, encouragement, succeeding."""
    a = new_child(r)
    skill, fail, success = r.choice(SKILLS)
    helper = r.choice([new_parent(r), Who("big sister", "f"), Who("big brother", "m")])
    st = Story(r, a=a, h=helper, skill=skill, fail=fail, success=success,
               words=r.choice(HELPER_WORDS), n=num(r.randint(2, 6)))
    has_intro = r.random() < 0.4
    if has_intro:
        intro(st)
    st.say(r.choice(["{a} wanted to learn to {skill}.", "{a} really wanted to {skill}.",
                     "More than anything, {a} wanted to {skill}."]))
    st.say(r.choice(["The first time {a.he} tried, {a.he} {fail}.",
                     "{a.He} tried, but {a.he} {fail}."]))
    if not has_intro:
        st.say(r.choice(["{a.He} felt sad.", "{a.He} wanted to give up.", "{a.He} was a little bit angry."]))
    st.say('{a.His} {h} said, "{words}"')
    st.say(r.choice(["{a} tried again and again.", "So {a} practiced every day for {n} days.",
                     "{a} tried {n} more times."]))
    st.say("At last, {a.he} {success}!")
    st.say(r.choice(["{a} was very proud of {a.himself}.", '"I did it!" shouted {a}.',
                     "{a.His} {h} clapped and cheered.", r.choice(MORALS["try"])]))
    return st.text()


def story_count(r: random.Random) -> str:
    """Arithmetic in words: adding, taking away, groups, counting aloud."""
    a = new_child(r)
    b = new_child(r, exclude=[a.name])
    parent = new_parent(r)
    st = Story(r, a=a, b=b, parent=parent.name)
    form = r.randrange(4)
    if r.random() < 0.4 and form != 3:  # the age story states the age itself
        intro(st)
    if form == 0:  # add then take away
        sing, plur, losses = r.choice(COUNTABLES)
        n, m = r.randint(1, 9), r.randint(1, 6)
        total = n + m
        k = r.randint(1, total)
        left = total - k
        st.set(n=count_noun(n, sing, plur), m=num(m), total=count_noun(total, sing, plur),
               k=num(k), plur=plur)
        st.say(r.choice(["{a} had {n}.", "In the morning, {a} had {n}.", "{a} found {n} in a box."]))
        st.say(r.choice(["Then {b} gave {a.him} {m} more, so {a.he} had {total}.",
                         "{a.His} {parent} gave {a.him} {m} more, so now {a.he} had {total}.",
                         "Later, {a.he} found {m} more, so {a.he} had {total}."]))
        loss = fill(r.choice(losses), a=a, b=b, k="{k}", parent=parent.name)
        left_txt = "no {plur} left" if left == 0 else count_noun(left, sing, plur) + " left"
        st.say("Then " + loss + ", so {a.he} had " + left_txt + ".")
        if left == 0:
            st.say(r.choice(['"Oh no, they are all gone!" said {a}.', "{a} laughed and went to find more."]))
        elif left == 1:
            st.say(r.choice(['"Only one is left," said {a}.', "{a.He} kept the last one for later."]))
        else:
            st.set(Left=cap(count_noun(left, sing, plur)))
            st.say(r.choice(['"{Left} is still a lot," said {a}.' if left >= 4 else '"{Left} are enough for me," said {a}.',
                             "{a} counted them again to be sure.", "{a.He} put them in a safe place."]))
    elif form == 1:  # groups
        csing, cplur = r.choice(CONTAINERS)
        sing, plur = r.choice(GROUPABLE)
        g, e = r.randint(2, 4), r.randint(2, 5)
        st.set(g=count_noun(g, csing, cplur), e=count_noun(e, sing, plur), tot=num(g * e), plur=plur,
               csing=csing)
        setup = r.choice(["{a} helped {a.his} {parent} in the kitchen.", "{a} and {b} were getting ready for a picnic.",
                          "It was snack time at {a}'s house.", "{a} helped {a.his} {parent} set the table."])
        st.say(setup)
        st.say("There were {g} on the table, and each {csing} had {e} in it.")
        st.say("{a} counted them all and said, \"There are {tot} {plur}!\"")
        if g * e % 2 == 0 and g * e <= 20:
            st.set(half=num(g * e // 2))
            friend = "{b}" if "{b}" in setup else "{a.his} friend {b}"
            st.say("{a} shared them with " + friend + ", so each of them got {half}.")
        st.say(r.choice(['"Very good counting," said {a.his} {parent}.', "{a} was very good at counting.",
                         "Then they ate a snack together."]))
    elif form == 2:  # counting aloud
        movers = [("duck", "ducks"), ("bird", "birds"), ("frog", "frogs"), ("boat", "boats"),
                  ("butterfly", "butterflies"), ("sheep", "sheep")]
        sing, plur = r.choice(GROUPABLE + movers + [("star", "stars"), ("tree", "trees")])
        n = r.randint(3, 10)
        st.set(plur=plur, seq=cap(", ".join(NUMBER_WORDS[1:n + 1])), Np=count_noun(n, sing, plur))
        owner = "{a.His} {parent}" if st.sentences else "{a}'s {parent}"
        st.say(r.choice(["{a} saw some {plur} and wanted to count them.",
                         owner + " asked, \"How many {plur} can you see?\""]))
        st.say('{a} pointed at each one and said, "{seq}."')
        st.say("There were {Np}!")
        if r.random() < 0.6:
            m = r.randint(1, 3)
            st.set(m=num(m), nm=count_noun(n + m, sing, plur))
            if (sing, plur) in movers:
                st.say(r.choice(["Then {m} more came, and now there were {nm}.",
                                 "Then {a.he} saw {m} more, so there were {nm} in all."]))
            else:
                st.say("Then {a.he} found {m} more, so there were {nm} in all.")
        st.say(r.choice(["{a} loved counting things.", '"Counting is fun," said {a}.',
                         "{a.His} {parent} gave {a.him} a high five."]))
    else:  # ages
        age = r.randint(3, 9)
        d = r.randint(1, 5)
        sib = r.choice([("big sister", "f", +1), ("big brother", "m", +1),
                        ("little sister", "f", -1), ("little brother", "m", -1)])
        word, sg, sign = sib
        if sign < 0:
            d = min(d, age - 1)
        other = age + sign * d
        sname = Who(r.choice(GIRLS if sg == "f" else BOYS), sg)
        while sname.name == a.name:
            sname = Who(r.choice(GIRLS if sg == "f" else BOYS), sg)
        st.set(s=sname, word=word, age=num(age), d=count_noun(d, "year", "years"), other=num(other),
               cmp="older" if sign > 0 else "younger", next_age=num(age + 1))
        st.say("{a} was {age} years old.")
        st.say("{a.His} {word}, {s}, was {d} {cmp}, so {s.he} was {other}.")
        if r.random() < 0.6:
            st.say("On {a.his} next birthday, {a} would be {next_age}.")
        st.say(r.choice(["{a} and {s} liked to play together every day.",
                         '"When I am big, I will be as tall as Dad," said {a}.',
                         "{s} always helped {a} with {a.his} shoes." if sign > 0
                         else "{a} always helped {s} with {s.his} shoes.",
                         "For {a.his} birthday, {a} wanted a cake with {next_age} candles."]))
    return st.text()


def story_week(r: random.Random) -> str:
    """Consecutive days of the week, one activity each."""
    a = new_child(r)
    b = new_child(r, exclude=[a.name])
    start = r.randrange(7)
    ndays = r.randint(3, 5)
    topic, fact = r.choice(TOPICS)
    parent = new_parent(r)
    acts = [
        "went to the park and played on the swings", "helped {a.his} {parent} bake bread",
        "visited {a.his} grandma", "read a book about {topic}", "played with {a.his} friend {b}",
        "drew a picture of " + an(r.choice(ANIMALS)["kind"]), "went swimming at the pool",
        "planted seeds in the garden", "went to the library with {b}", "cleaned {a.his} room",
        "rode {a.his} bike to the lake", "made a card for {a.his} {parent}",
        "built a fort out of pillows", "went to the zoo and saw the lions", "stayed home because it was raining",
        "played soccer with {b}", "learned a new song at school", "flew a kite on the hill",
    ]
    chosen = r.sample(acts, ndays)
    st = Story(r, a=a, b=b, topic=topic, parent=parent.name, P=parent.name.capitalize())
    if r.random() < 0.4:
        intro(st)
    else:
        st.say(r.choice(["{a} had a busy week.", "This is the story of {a}'s week.",
                         "{a} did something new every day."]))
    for i, act in enumerate(chosen):
        day = DAYS[(start + i) % 7]
        subj = "{a}" if i == 0 else "{a.he}"
        st.say(f"On {day}, {subj} {act}.")
        if act.startswith("read a book") and r.random() < 0.7:
            st.say("{a.He} learned that " + fact[0].lower() + fact[1:])
    last = DAYS[(start + ndays - 1) % 7]
    nxt = DAYS[(start + ndays) % 7]
    st.set(last=last, nxt=nxt)
    st.say(r.choice(['"Today is {last}, so tomorrow is {nxt}," said {P}.',
                     "{a} wondered what {a.he} would do on {nxt}.",
                     "By {last} night, {a} was very tired, but {a.he} was happy.",
                     'At bedtime, {a} asked, "What will we do on {nxt}?"']))
    return st.text()


def story_animal(r: random.Random) -> str:
    """A hungry animal asks another animal for help finding its favourite food."""
    a_sp, b_sp = r.sample(ANIMALS, 2)
    names = r.sample(PET_NAMES, 2)
    x = Who(names[0], r.choice("mf"))
    y = Who(names[1], r.choice("mf"))
    food_look, food_share = a_sp["food"]
    st = Story(r, x=x, y=y, kind=a_sp["kind"], kind2=b_sp["kind"], home=a_sp["home"],
               look=food_look, share=food_share, spot=r.choice(FOOD_SPOTS),
               ax=an(f"{r.choice(ANIMAL_ADJ)} {a_sp['kind']}"), by=an(b_sp["kind"]),
               sound=a_sp["sound"], sound2=b_sp["sound"])
    st.say(r.choice(["Once upon a time, there was {ax} named {x}.", "{x} was {ax} who lived {home}.",
                     "In the forest, there lived {ax} named {x}."]))
    opt = optional(r, ["home", "sound", "sound2"], [3, 5])
    if "lived" not in st.sentences[0] and "home" in opt:
        st.say("{x.He} lived {home}.")
    if a_sp["sound"] and "sound" in opt:
        st.say(r.choice(['Every morning, {x} said "{sound}!" to say hello to the sun.',
                         'When {x} was happy, {x.he} said "{sound}! {sound}!"']))
    st.say(r.choice(["One day, {x} was very hungry, so {x.he} went to look for {look}.",
                     "One morning, {x} woke up hungry and wanted {look}."]))
    st.say(r.choice(["On the way, {x.he} met {by} named {y}.", "Soon {x.he} met {by} called {y}."]))
    if b_sp["sound"] and "sound2" in opt:
        st.say('"{sound2}!" said {y}. "Hello, {x}!"')
    st.say('"Do you know where I can find {look}?" asked {x}.')
    st.say('"Yes," said {y}. "Follow me! I know a place {spot}."')
    st.say(r.choice(["{x} and {y} walked there together, and {x} found {look}.",
                     "{y} showed {x} the way, and soon {x} found {look}."]))
    st.say(r.choice(["{x} thanked {y}, and after that they were best friends.",
                     "From that day on, {x} and {y} were best friends.",
                     "{x} was not hungry anymore, and {x.he} thanked {y} again and again.",
                     r.choice(MORALS["kind"])]))
    return st.text()


def story_pet(r: random.Random) -> str:
    """A child's pet goes missing and is found by its sound."""
    a = new_child(r)
    kind = r.choice(PET_KINDS)
    pet = Who(r.choice(PET_NAMES), r.choice("mf"))
    where, state = r.choice(PET_HIDING if kind not in ("turtle", "hamster") else PET_HIDING[:3])
    sound = PET_SOUNDS[kind]
    st = Story(r, a=a, pet=pet, kind=kind, apet=an(f"{r.choice(ANIMAL_ADJ)} {kind}"),
               likes=r.choice(PET_LIKES), where=where, state=state, sound=sound)
    st.set(likes=fill(st.roles["likes"], a=pet))
    st.say(r.choice(["{a} had {apet} named {pet}.", "{pet} was {a}'s {kind}."]))
    st.say("{pet} liked to {likes}.")
    st.say(r.choice(["One afternoon, {pet} was gone.", "One day, {a} could not find {pet} anywhere."]))
    st.say('{a} called, "{pet}! {pet}! Where are you?"')
    if sound:
        st.say('Then {a.he} heard a little "{sound}!" from {where}.')
    else:
        st.say("Then {a.he} heard a soft noise from {where}.")
    st.say("There was {pet}, {state}.")
    st.say(r.choice(["{a} picked {pet.him} up and gave {pet.him} a big hug.",
                     "{a} carried {pet.him} home and gave {pet.him} a treat.",
                     '"I am so glad I found you," said {a}.']))
    return st.text()


def story_school(r: random.Random) -> str:
    """A lesson: arithmetic questions, days of the week, spelling, or a fact."""
    a = new_child(r)
    b = new_child(r, exclude=[a.name])
    tname, tg = r.choice(TEACHERS)
    t = Who(tname, tg)
    st = Story(r, a=a, b=b, t=t)
    st.say(r.choice(["At school, {t} stood in front of the class.", "It was a busy morning at school.",
                     "{a} and {b} sat next to each other at school.", "{a} liked going to school."]))
    kinds = r.sample(["add", "sub", "day", "spell", "fact"], r.choice([1, 2, 2]))
    for k in kinds:
        if k == "add":
            x, y = r.randint(1, 10), r.randint(1, 10)
            st.set(x=num(x), y=num(y), z=cap(num(x + y)))
            st.say('{t} asked, "What is {x} plus {y}?"')
            if r.random() < 0.3 and x + y > 2:
                st.set(wrong=cap(num(x + y - 1)))
                st.say('{b} said, "{wrong}!" but that was not right.')
            st.say('{a} counted on {a.his} fingers and said, "{z}!"')
            st.say(r.choice(['"That is right," said {t}.', '"Well done, {a}," said {t}.']))
        elif k == "sub":
            sing, plur, _ = r.choice(COUNTABLES)
            x = r.randint(3, 10)
            y = r.randint(1, x - 1)
            st.set(xs=count_noun(x, sing, plur), y=num(y), zs=cap(count_noun(x - y, sing, plur)), plur=plur)
            st.say('{t} asked, "If you have {xs} and you give away {y}, how many are left?"')
            st.say('{a} thought hard and said, "{zs}."')
            st.say('"Very good," said {t}.')
        elif k == "day":
            i = r.randrange(7)
            st.set(d1=DAYS[i], d2=DAYS[(i + 1) % 7])
            st.say('{t} asked, "What day comes after {d1}?"')
            st.say('"{d2}!" said {b}.')
        elif k == "spell":
            w = r.choice(SPELL_WORDS)
            st.set(w=w, W="-".join(w.upper()))
            st.say('{t} asked, "Who can spell {w}?"')
            st.say('{a} put up {a.his} hand and said, "{W}, {w}!"')
        else:
            topic, fact = r.choice(TOPICS)
            st.set(topic=topic, fact=fact[:-1] + ",")
            st.say('{t} said, "Today we will learn about {topic}."')
            st.say('"{fact}" {t.he} said.')
            st.say('"Wow," said {b}. "I did not know that."')
    if len(st.sentences) < 7:
        st.say(r.choice(["At the end of the day, {a} told {a.his} family everything {a.he} had learned.",
                         "{a} loved learning new things.", "Then the bell rang, and it was time to play.",
                         "{t} gave everyone a gold star."]))
    return st.text()


STORY_TYPES = [
    (story_outing, 22),
    (story_lost, 11),
    (story_share, 10),
    (story_learn, 11),
    (story_count, 13),
    (story_week, 9),
    (story_animal, 10),
    (story_pet, 6),
    (story_school, 8),
]


def generate_document(r: random.Random) -> str:
    funcs = [f for f, _ in STORY_TYPES]
    weights = [w for _, w in STORY_TYPES]
    return r.choices(funcs, weights=weights, k=1)[0](r)


def generate_corpus(seed: int, target_chars: int) -> str:
    """Stories, one per line, until the text is at least `target_chars` long. Ends with a newline."""
    r = random.Random(seed)
    lines: list[str] = []
    total = 0
    while total < target_chars:
        doc = generate_document(r)
        lines.append(doc)
        total += len(doc) + 1
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Statistics and CLI
# --------------------------------------------------------------------------------------------------

WORD_RE = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")


def corpus_stats(text: str) -> dict:
    docs = [line for line in text.split("\n") if line]
    chars = Counter(text)
    n = len(text)
    h_char = -sum(c / n * math.log2(c / n) for c in chars.values())
    words = WORD_RE.findall(text)
    wc = Counter(w.lower() for w in words)
    nw = len(words)
    h_word = -sum(c / nw * math.log2(c / nw) for c in wc.values())
    return {
        "chars": n,
        "bytes": len(text.encode("utf-8")),
        "documents": len(docs),
        "mean_doc_chars": round(n / max(len(docs), 1), 1),
        "words": nw,
        "distinct_words": len(wc),
        "distinct_chars": len(chars),
        "char_unigram_entropy_bits": round(h_char, 4),
        "char_unigram_perplexity": round(2 ** h_char, 3),
        "word_unigram_entropy_bits": round(h_word, 4),
        "word_unigram_perplexity": round(2 ** h_word, 2),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="write the corpus here (default: stdout unless --stats)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--size-kb", type=float, default=DEFAULT_SIZE_KB, help="target size in KiB (1024 chars)")
    ap.add_argument("--stats", action="store_true", help="print corpus statistics (to stderr if writing to stdout)")
    args = ap.parse_args(argv)
    text = generate_corpus(args.seed, int(args.size_kb * BYTES_PER_KB))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(text.encode("utf-8"))
    elif not args.stats:
        sys.stdout.write(text)
    if args.stats:
        for k, v in corpus_stats(text).items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
