"""A labelled evaluation set for preference inference with the default catalog.

``SIGNALS[dimension][pole]``: user messages that signal that pole (and are about a variety of topics, so a method
that keys on topic rather than style fails them). ``NEUTRAL_QUESTIONS``: plain requests ("how does X work?",
"explain X", "what is X?") that signal no pole of any dimension. None of these texts is a catalog example or one of
the neutral calibration texts in ``profiles.inference``: this set measures, it does not train.
"""

from __future__ import annotations

SIGNALS: dict[str, dict[str, tuple[str, ...]]] = {
    "expertise": {
        "elementary": (
            "I've never studied chemistry, so please use simple words: why does ice float?",
            "Explain it to me like I'm a kid, how do airplanes stay up?",
            "I'm just starting to learn guitar and don't know any of the terms, what's a chord?",
            "Total newbie here, what even is a stock?",
            "Can you break it down in really basic terms? I'm not a tech person.",
            "I don't understand any of the jargon, what does 'API' mean in normal language?",
            "It's my first time doing taxes and I have no clue what a deduction is.",
            "Sorry, I'm not good at maths, could you explain fractions really slowly and simply?",
            "What's a gene? Please assume I know nothing about biology.",
            "I'm learning to code from scratch, what is a loop in simple terms?",
        ),
        "expert": (
            "What are the trade-offs between LSM-trees and B-trees for write-heavy workloads?",
            "Explain the bias-variance decomposition for squared loss; assume graduate-level statistics.",
            "How does the Linux CFS scheduler compute virtual runtime, and how are nice values weighted?",
            "As a cardiologist, what's the current evidence on SGLT2 inhibitors in HFpEF?",
            "Assume I know measure theory: why is the Lebesgue integral preferred over the Riemann integral?",
            "What is the complexity of Dijkstra with a Fibonacci heap, and when does it pay off in practice?",
            "No need for an intro, I'm a senior compiler engineer: how does LLVM's SROA pass decide what to promote?",
            "Give me the formal definition of a monad and its laws in category-theoretic terms.",
            "When designing CRISPR-Cas9 guide RNAs, how do you minimise off-target cleavage?",
            "How do you price a barrier option under stochastic volatility, say in the Heston model?",
        ),
    },
    "verbosity": {
        "concise": (
            "Quick answer: what's the capital of Australia?",
            "In a few words, what is a mortgage?",
            "Short version only, how do I undo the last git commit?",
            "Just the number: how many grams are in a kilo?",
            "Give me a one-liner to reverse a list in Python.",
            "Bullet points only, no fluff: pros and cons of renting.",
            "Summarise the plot of Hamlet in two sentences.",
            "No need to elaborate, yes or no: is a tomato a fruit?",
            "Keep it brief, I just need the gist of blockchain.",
            "What's the boiling point of water? Just the answer.",
        ),
        "detailed": (
            "Give me an in-depth explanation of how mortgages are priced, covering every factor.",
            "I'd like a comprehensive guide to training for a marathon, week by week.",
            "Please go into as much detail as possible about the causes of the First World War.",
            "Explain thoroughly, with worked examples, how to solve quadratic equations.",
            "Don't hold back on length: describe every stage of the water treatment process.",
            "Can you give a long, exhaustive breakdown of how a bill becomes law?",
            "I want the complete picture on sourdough baking, including the chemistry and the common mistakes.",
            "Write a detailed, multi-paragraph analysis of the themes in 1984.",
            "Go through each option at length and compare them carefully before recommending one.",
            "Please be thorough: list every step to set up a home network and explain why each one matters.",
        ),
    },
    "tone": {
        "friendly": (
            "heyyy you're a lifesaver!! can you help me name my new puppy?",
            "haha that's hilarious, ok one more: best pizza toppings??",
            "sup! got a sec to help me with my resume?",
            "aww thank you, you're so sweet :) what should I watch tonight?",
            "yay it worked!!! you rock",
            "Hey friend! hope you're having a great day, quick q about houseplants",
            "lmao my code finally runs, thanks dude",
            "hiii! can u tell me a fun fact? :D",
            "ok cool cool, thx a bunch!",
            "Heya, you're the best! mind helping me plan a picnic?",
        ),
        "formal": (
            (
                "Good afternoon. I should be grateful if you would review the enclosed proposal at your earliest "
                "convenience."
            ),
            "Please prepare a memorandum outlining the compliance obligations of our department.",
            "I would like to request a formal evaluation of the vendor's tender submission.",
            "Would you be so kind as to draft a letter of recommendation for a former employee?",
            "To whom it may concern: we require a written assessment of the audit findings.",
            "Kindly advise on the appropriate procedure for submitting a grievance.",
            "I respectfully request a summary of the committee's decisions for the official record.",
            "Please compose a courteous reply declining the invitation on behalf of the director.",
            "We would be obliged if you could prepare a formal statement for the shareholders.",
            "May I ask you to provide a professional assessment of the risks involved?",
        ),
    },
}

NEUTRAL_QUESTIONS: tuple[str, ...] = (
    "How does a refrigerator keep food cold?",
    "Explain how tides work.",
    "What is a credit score?",
    "How do solar panels make electricity?",
    "What causes earthquakes?",
    "Explain the rules of chess.",
    "How do elections work in Germany?",
    "What is the greenhouse effect?",
    "How do I make pancakes?",
    "Explain what a neural network is.",
    "How does GPS work?",
    "What is the difference between a virus and a bacterium?",
    "Why is the sky blue?",
    "How do submarines dive and surface?",
    "Explain how a car engine works.",
    "What does a central bank do?",
    "How does the immune system fight infections?",
    "Explain the water cycle.",
    "How do batteries store energy?",
    "Tell me how the internet works.",
)
