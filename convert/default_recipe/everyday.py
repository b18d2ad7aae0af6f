"""The benign side that looks like what people send, as families: request cores (everyday_requests.py) in frames
and styles, tasks on pasted text, a few other languages, conversational turns, and multi-turn chats.

Every item records its family (``domain``, ``frame``, ``style``, ``source``), so validation can hold out whole
families (a domain, a frame, a style, a source) rather than rows: prompts written by the same hand in the same
shape as the training rows flatter a model (README: the default model card). Deterministic for a seed; no torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable

from .everyday_requests import DOMAINS


@dataclass(frozen=True)
class Everyday:
    prompt: str
    domain: str   # DOMAINS key, or "conversation", "pasted", "other-language"
    frame: str    # how the request is put
    style: str    # surface form: plain, lower, typos, context, terse
    source: str   # "core", "pasted", "pasted-code", "other-language", "opener"
    answer: str | None = None  # our own answer (openers); None: only the decision is taught


# How a core (lower-case imperative) is put. Each is a family; the held-out ones are listed in HELDOUT.
FRAMES: dict[str, str] = {
    "imperative": "{Core}.",
    "can-you": "Can you {core}?",
    "could-you-please": "Could you please {core}?",
    "please": "Please {core}.",
    "i-need": "I need you to {core}.",
    "help-me": "I'd like some help: {core}.",
    "quick": "Quick question - {core}?",
    "would-you": "Would you {core} for me?",
    "hey": "hey, can u {core}",
    "thanks-after": "{Core}, thanks!",
    "im-trying": "I'm trying to get something done. {Core}.",
    "bare": "{core}",
}
# Context people add before a request: a style of its own.
CONTEXTS = [
    "I'm a complete beginner.", "This is for work.", "My friend asked me this and I didn't know.",
    "I have about ten minutes.", "Keep it short please.", "I'm a student.", "Sorry if this is a silly question.",
    "Long day today.", "Just curious.", "For a school assignment.", "I'm in a bit of a hurry.",
]
STYLES = ("plain", "lower", "typos", "context", "terse")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _typos(text: str, rng: random.Random) -> str:
    """One or two typing slips: a swapped pair, a dropped or a doubled letter."""
    chars = list(text)
    for _ in range(rng.choice((1, 2))):
        spots = [i for i in range(1, len(chars) - 2) if chars[i].isalpha() and chars[i + 1].isalpha()]
        if not spots:
            break
        i = rng.choice(spots)
        kind = rng.randrange(3)
        if kind == 0:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif kind == 1:
            del chars[i]
        else:
            chars.insert(i, chars[i])
    return "".join(chars)


_TERSE_DROP = {"me", "a", "an", "the", "my", "to", "how", "tell", "give", "please", "some", "for"}


def _terse(core: str) -> str:
    """What people type into a search box: the content words only."""
    words = [w for w in core.split() if w.lower() not in _TERSE_DROP]
    return " ".join(words) if len(words) >= 2 else core


def styled(core: str, frame: str, style: str, rng: random.Random) -> str:
    if style == "terse":
        return _terse(core)
    text = FRAMES[frame].format(core=core, Core=_cap(core))
    if style == "lower":
        return text.lower().rstrip(".?!")
    if style == "typos":
        return _typos(text, rng)
    if style == "context":
        return f"{rng.choice(CONTEXTS)} {text}"
    return text


# --- tasks on text the user pastes (our own short texts) ---------------------------------------------------

PASTED_TEXTS = [
    "Our team met on Tuesday to review the budget. We agreed to cut travel costs by ten percent and to move the "
    "product launch to March so that testing can finish.",
    "The library will be closed on Monday for the public holiday. Books due that day can be returned on Tuesday "
    "without a late fee.",
    "hi all, just a reminder that the fire drill is tomorrow at 10am, please leave by the nearest exit and meet in "
    "the parking lot",
    "Honey bees visit flowers to collect nectar and pollen. As they move from flower to flower they carry pollen "
    "with them, which helps plants produce seeds and fruit.",
    "I ordered a blue jacket in size M on the 3rd but received a red one in size L. I would like to exchange it.",
    "The new bus timetable starts next week. Route 12 will run every fifteen minutes during rush hour and every "
    "thirty minutes in the evening.",
    "Thank you for coming to the open day. We hope you enjoyed meeting our teachers and seeing the classrooms.",
    "Preheat the oven to 180 degrees. Mix the flour, sugar and butter, add two eggs, pour into a tin and bake for "
    "forty minutes.",
    "Sales grew by 8 percent this quarter, mostly thanks to online orders, while shop sales stayed flat.",
    "The meeting is moved from 2pm to 3pm because the projector room is booked. Bring your laptops.",
    "Dear neighbours, the building's water will be turned off on Thursday from 9 to 12 for pipe repairs.",
    "Our app now lets you pay with a phone, save favourite orders and track deliveries on a map.",
]
PASTED_CODE = [
    "def average(xs):\n    return sum(xs) / len(xs)",
    "for i in range(10)\n    print(i)",
    "function add(a, b) {\n  return a - b;\n}",
    "SELECT name, COUNT(*) FROM orders GROUP BY name",
    "x = input('number: ')\nprint(x * 2)",
    "let total = 0;\nfor (const p of prices) total += p;\nconsole.log(total)",
]
PASTED_TASKS = {
    "summarize": "Summarize this in one sentence:\n\n{text}",
    "formal": "Make this sound more formal:\n{text}",
    "bullets": "Turn this into bullet points: {text}",
    "translate": "Translate this into Spanish: {text}",
    "shorter": "Can you make this shorter?\n\n{text}",
    "title": "Give this a title: {text}",
    "reply": "Write a short reply to this message: {text}",
    "proofread": "Proofread this for me:\n{text}",
}
CODE_TASKS = {
    "explain-code": "What does this code do?\n\n{text}",
    "fix-code": "Fix the bug in this code:\n{text}",
    "comment-code": "Add comments to this code:\n{text}",
}

# --- other languages (our own sentences) -------------------------------------------------------------------

OTHER_LANGUAGES = {
    "fr": ["Bonjour ! Peux-tu m'aider à écrire un message d'anniversaire ?", "Donne-moi une recette de crêpes.",
           "Comment dit-on « merci beaucoup » en anglais ?", "Explique-moi la photosynthèse simplement.",
           "Quelles sont les choses à voir à Lyon ?", "Merci pour ton aide !"],
    "es": ["Hola, ¿me ayudas a planear una cena para cuatro personas?", "¿Cómo se hace una tortilla de patatas?",
           "Explícame qué es la inflación.", "Escribe un poema corto sobre el mar.",
           "¿Qué puedo visitar en Sevilla en dos días?", "¡Gracias por la ayuda!"],
    "de": ["Hallo! Kannst du mir ein einfaches Rezept für Apfelkuchen geben?", "Wie lange muss ich Nudeln kochen?",
           "Erkläre mir bitte, wie ein Kredit funktioniert.", "Schreib eine kurze Einladung zu meinem Geburtstag.",
           "Danke schön!"],
    "it": ["Ciao! Mi consigli un libro da leggere in vacanza?", "Come si prepara il risotto ai funghi?",
           "Scrivi un breve messaggio di auguri per Natale.", "Grazie mille!"],
    "pt": ["Olá! Pode me ajudar a organizar minha semana?", "Como faço pão de queijo?",
           "Explique o que é uma taxa de juros.", "Obrigado pela ajuda!"],
    "nl": ["Hoi! Kun je een recept geven voor pannenkoeken?", "Wat zijn leuke dingen om te doen in Utrecht?",
           "Bedankt!"],
}

# --- conversational turns, with our own answers ------------------------------------------------------------

OPENERS: dict[str, tuple[list[str], list[str]]] = {
    "greeting": (
        ["Hi", "Hello", "Hey", "Hi!", "Hello!", "Hey there!", "Good morning", "Good evening!", "hi there",
         "Hiya", "Yo", "Heya", "Morning!", "Hello, how are you?", "Hi, how's it going?", "hey, what's up",
         "Greetings!", "Hello again", "Hi :)", "Good afternoon", "hello?", "Howdy"],
        ["Hello! How can I help you today?", "Hi there! What can I do for you?",
         "Hey! What would you like to talk about?", "Hello! I'm here to help. What do you need?"],
    ),
    "thanks": (
        ["Thanks!", "Thank you", "Thanks a lot", "thx", "Thank you so much!", "Great, thanks!", "Thanks, that helps",
         "Cheers", "ty", "Much appreciated", "Thanks for your help", "Perfect, thank you!", "Awesome, thanks",
         "Thank you, that was useful", "thanks!!"],
        ["You're welcome! Let me know if there's anything else I can help with.",
         "Glad I could help! Anything else?", "You're welcome. Happy to help any time.",
         "No problem at all! Feel free to ask if you need more."],
    ),
    "acknowledgement": (
        ["OK", "Okay", "Got it", "Cool", "Makes sense", "Nice", "Great", "Alright", "Sounds good", "I see",
         "Perfect", "Interesting", "ok cool", "Good to know", "Fair enough"],
        ["Great! Is there anything else you'd like to know?", "Glad that makes sense. What's next?",
         "Good! Let me know if you have more questions."],
    ),
    "about-you": (
        ["What can you do?", "What can you help me with?", "How can you help me?", "What are you good at?",
         "Can you help me with something?", "I have a question", "Can I ask you something?",
         "Are you there?", "What kinds of questions can I ask you?", "Help"],
        ["I can answer questions, explain things, help you write and edit text, brainstorm ideas, and help with "
         "code, maths and everyday tasks. What would you like to do?",
         "Sure! Ask me anything: explanations, writing, recipes, code, planning and more.",
         "Of course. What do you need help with?"],
    ),
    "farewell": (
        ["Bye!", "Goodbye", "See you later", "Good night!", "That's all for now, bye", "Talk to you later"],
        ["Goodbye! Have a great day.", "See you! Come back any time.", "Take care!"],
    ),
}

# Turns that only make sense after an answer: taught in a second turn, after a benign first one.
FOLLOW_UPS = [
    "yes, go on", "Shorter please", "Can you explain that more simply?", "Give me another example",
    "Can you make it funnier?", "Tell me more", "Continue", "What about the second point?", "Why?",
    "Can you put that in a table?", "Make it more formal", "Now in French", "Try again", "Can you add more detail?",
    "That's not quite what I meant, can you try a different approach?", "And how long does that take?",
    "Summarize that in one sentence", "Can you give me the steps as a list?", "What would you recommend?",
    "ok, and then?", "Thanks! One more thing: how do I save it?",
]

# --- whole families held out of training, for validation ---------------------------------------------------

HELDOUT = {
    "domain": ("gardening", "pets", "diy"),
    "frame": ("would-you", "im-trying", "pt", "nl"),  # two ways of asking, two of the languages
    "style": ("terse",),
    "source": ("pasted-code",),
}


def heldout_reason(item: Everyday) -> str | None:
    """The held-out family the item belongs to ("domain:pets"), or None when it may be trained on."""
    for kind, values in HELDOUT.items():
        if getattr(item, kind) in values:
            return f"{kind}:{getattr(item, kind)}"
    return None


def requests(seed: int, per_core: int = 8) -> list[Everyday]:
    """Each core in ``per_core`` different (frame, style) pairs."""
    rng = random.Random(seed)
    out = []
    pairs = [(f, s) for f in FRAMES for s in STYLES if not (s == "terse" and f != "bare")]
    for domain in sorted(DOMAINS):
        for core in DOMAINS[domain]:
            for frame, style in rng.sample(pairs, per_core):
                out.append(Everyday(styled(core, frame, style, rng), domain, frame, style, "core"))
    return out


def pasted(seed: int) -> list[Everyday]:
    rng = random.Random(seed + 1)
    out = []
    for name, task in PASTED_TASKS.items():
        for text in rng.sample(PASTED_TEXTS, 6):
            out.append(Everyday(task.format(text=text), "pasted", name, "plain", "pasted"))
    for name, task in CODE_TASKS.items():
        for text in PASTED_CODE:
            out.append(Everyday(task.format(text=text), "pasted", name, "plain", "pasted-code"))
    return out


def other_languages() -> list[Everyday]:
    return [Everyday(p, "other-language", lang, "plain", "other-language")
            for lang, prompts in OTHER_LANGUAGES.items() for p in prompts]


def openers(seed: int) -> list[Everyday]:
    """Every opener with one of its kind's answers (twice for the short ones: they are what people type first)."""
    rng = random.Random(seed + 2)
    out = []
    for kind, (prompts, answers) in OPENERS.items():
        for p in prompts:
            for _ in range(2):
                out.append(Everyday(p, "conversation", kind, "plain", "opener", rng.choice(answers)))
    return out


# Practical questions that ask for the best or a better way, time, tool or choice: they have useful answers, unlike
# "the greatest sport of all" (Indeterminate, blunt_refusals.py), and people ask them all the time.
ADVICE = [
    "What's the best way to memorize vocabulary?", "What is the best time of year to visit Iceland?",
    "Which is better for a beginner, a road bike or a hybrid?", "What's the best way to reheat leftover pizza?",
    "What's the best way to clean a cast iron pan?", "Best way to get rid of hiccups?",
    "What's the best way to prepare for a job interview?", "Which is better for saving, a fixed or a flexible account?",
    "What is the best way to stop procrastinating?", "What's the best way to fall asleep faster?",
    "Which camera settings are best for photos at night?", "What's the best way to split a bill between friends?",
    "What's the best stretch after running?", "What's the best way to store fresh herbs?",
    "Which is better for a small flat, a fan or a portable air conditioner?", "What is the best way to learn touch typing?",
    "What's the best order to read the Narnia books in?", "What's the best way to pack a suitcase so clothes don't crease?",
    "What's the best font size for a presentation slide?", "Which sorting algorithm is best for nearly sorted data?",
    "What's the best way to ask for a raise?", "What is the best age to start learning piano?",
    "What's the best way to remove a red wine stain?", "Which is healthier, brown rice or white rice?",
    "What's the best way to keep a conversation going on a first date?", "What's the most efficient way to defrost a freezer?",
    "What's the best way to back up my phone's photos?", "What is the best temperature to bake cookies at?",
    "Which is better for a long commute, audiobooks or podcasts?", "What's the best way to practise public speaking?",
]


def advice(seed: int) -> list[Everyday]:
    """Each practical best-or-better question as written and in one other style (lower case, a slip, a context)."""
    rng = random.Random(seed + 4)
    out = []
    for q in ADVICE:
        out.append(Everyday(q, "advice", "question", "plain", "core"))
        style = rng.choice(("lower", "typos", "context"))
        out.append(Everyday(styled(q, "bare", style, rng), "advice", "question", style, "core"))
    return out


def everyday(seed: int, with_advice: bool = False) -> list[Everyday]:
    """``with_advice``: the advice family too (train_default --round 5 and 6); last, so that the items before it, and
    the families held out of training, stay those of the shipped recipe."""
    return requests(seed) + pasted(seed) + other_languages() + openers(seed) + (advice(seed) if with_advice else [])


def split(items: Iterable[Everyday], seed: int, val_fraction: float = 0.1
          ) -> tuple[list[Everyday], list[Everyday], list[Everyday]]:
    """(train, random validation, family-held-out validation): held-out families never reach training; of the
    rest, a random ``val_fraction`` is kept out too, so the two validation figures can be compared."""
    rng = random.Random(seed + 3)
    train, val, held = [], [], []
    for item in items:
        if heldout_reason(item) is not None:
            held.append(item)
        elif rng.random() < val_fraction:
            val.append(item)
        else:
            train.append(item)
    return train, val, held


def diversity(items: list[Everyday]) -> dict:
    """Distinct prompts, frames and word 3-grams: how varied the generated side is (reported in the model card)."""
    grams = set()
    for item in items:
        words = item.prompt.lower().split()
        grams.update(zip(words, words[1:], words[2:]))
    return {"prompts": len(items), "distinct_prompts": len({i.prompt for i in items}),
            "domains": len({i.domain for i in items}), "frames": len({i.frame for i in items}),
            "styles": len({i.style for i in items}), "distinct_3grams": len(grams)}
