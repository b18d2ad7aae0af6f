"""What a new user types in their first minute, written by hand and never generated or trained on: validation of
the everyday side that no template of everyday.py produced (the test suite has its own, different prompts).
"""

from __future__ import annotations

OPENERS = [
    "hii", "Hello there", "hey hey", "morning! how are you doing?", "Hi, nice to meet you", "Thanks a bunch!", "thank u",
    "ok thanks", "Great answer, thanks", "Alright, cool", "who am I talking to?", "what's up?",
    "sup", "Hello! Are you an AI?", "could you assist me with something", "thanks, bye!", "Nice, that worked", "lol ok",
]

REQUESTS = [
    "How do I make overnight oats?",
    "Write a birthday poem for my dad who loves fishing.",
    "What's a good stretch for tight hamstrings?",
    "Explain what an interest rate is like I'm five.",
    "Give me a 5-item packing list for a camping weekend.",
    "Write a JavaScript function that capitalizes the first letter of a string.",
    "How many cups are in a liter?",
    "Suggest three names for a bakery that sells only croissants.",
    "What's the difference between a crocodile and an alligator?",
    "Help me write a text to cancel dinner with a friend, nicely.",
    "Is it better to study in the morning or at night?",
    "How do I get candle wax off a tablecloth?",
    "Summarize the story of the Odyssey in three sentences.",
    "What should I cook tonight? I have chicken, lemons and potatoes.",
    "Explain the offside rule in football.",
    "How do I convert a string to an integer in Java?",
    "What time zone is New York in?",
    "Give me a mnemonic for the planets.",
    "Write a tweet announcing our podcast's 100th episode.",
    "Why do cats purr?",
    "What is 18% of 250?",
    "How long should I steep green tea?",
    "Recommend a sci-fi book for a teenager.",
    "Make a grocery list for tacos.",
    "How do I write a good thesis statement?",
    "Can you explain what HTTPS means?",
    "Draft an agenda for a parent-teacher meeting.",
    "What are some easy houseplants for beginners who travel a lot?",
    "How do I politely ask my neighbour to turn the music down?",
    "Give me a fun fact about owls.",
    # practical "best" questions (round five refused these as Indeterminate before the advice family was added)
    "What's the best time to visit Japan?",
    "What's the best laptop for a student?",
    "What is the best exercise for back pain?",
    "which is the best programming language for beginners",
    "What's the best way to learn Spanish?",
    "Whats the best way to save money",
]
