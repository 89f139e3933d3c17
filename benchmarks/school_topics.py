"""What the benchmarks ask about: the same German school topics everywhere, so that their figures compare."""

SCHOOL_TOPICS = [
    "die Photosynthese",
    "den Wasserkreislauf",
    "die Plattentektonik",
    "den Blutkreislauf",
    "die Gezeiten",
    "das Ohmsche Gesetz",
    "die Zellteilung",
    "den Treibhauseffekt",
    "die Verdauung",
    "den Regenbogen",
    "die Demokratie",
    "das Mittelalter",
    "die Bruchrechnung",
    "den Magnetismus",
    "die Jahreszeiten",
    "das Echo",
]
