"""The fixed German answers and notes of moderation: kind, short, the same every time.

A blocked question is answered by one of these instead of the model (the model is not asked); a blocked answer is
cut where the rule matched and replaced by one of these. For self-harm the answer gives the help lines a child in
Germany can call free and without a name, day and night.
"""

from __future__ import annotations

BLOCKED = {
    "self_harm": (
        "Es klingt so, als ginge es dir gerade nicht gut. Das ist wichtig, und du musst damit nicht allein bleiben.\n\n"
        "Sprich bitte mit einem Menschen, dem du vertraust: deinen Eltern, einer Lehrerin, einem Lehrer oder der "
        "Schulsozialarbeit. Hier bekommst du sofort Hilfe, kostenlos und ohne deinen Namen zu sagen:\n\n"
        "- **Nummer gegen Kummer** (Kinder- und Jugendtelefon): **116 111**, montags bis samstags 14 bis 20 Uhr\n"
        "- **TelefonSeelsorge**: **0800 111 0 111** oder **0800 111 0 222**, rund um die Uhr\n"
        "- In akuter Gefahr: Notruf **112**\n\n"
        "Ich bin ein Computerprogramm und kann dir dabei nicht so helfen wie ein Mensch."
    ),
    "violence": (
        "Darauf antworte ich nicht. Wenn du dich bedroht fühlst oder jemand in Gefahr ist, sprich bitte sofort mit "
        "einer Lehrerin, einem Lehrer oder einem anderen Erwachsenen, dem du vertraust. In einem Notfall: Polizei **110**. "
        "Reden hilft auch bei Wut: Die **Nummer gegen Kummer** erreichst du kostenlos unter **116 111**."
    ),
    "sexual": (
        "Darauf antworte ich hier nicht. Wenn du Fragen zu deinem Körper, zu Liebe oder Sexualität hast, frag gern "
        "im Biologieunterricht, bei der Schulsozialarbeit oder bei der **Nummer gegen Kummer** (**116 111**). "
        "Wenn dich jemand zu Nacktbildern drängt, sag es bitte einem Erwachsenen, dem du vertraust."
    ),
    "personal_data": (
        "Bitte schreibe keine persönlichen Daten wie Telefonnummern, Adressen, E-Mail-Adressen oder Kontonummern "
        "in den Chat. Stelle deine Frage gern noch einmal ohne sie."
    ),
}
"""What the user gets instead of the model's answer, by category."""

WARNED = {
    "self_harm": (
        "Hinweis: Wenn es dir nicht gut geht, hilft die **Nummer gegen Kummer** (**116 111**) oder die "
        "**TelefonSeelsorge** (**0800 111 0 111**), kostenlos und ohne Namen."
    ),
    "violence": "Hinweis: Hier geht es um Gewalt. Wenn sich jemand bedroht fühlt, sprich bitte mit einem Erwachsenen, dem du vertraust.",
    "sexual": "Hinweis: Dieses Thema gehört nicht in den Schul-Chat. Fragen dazu beantwortet gern die Schulsozialarbeit.",
    "personal_data": (
        "Hinweis: Bitte schreibe keine persönlichen Daten (Telefonnummern, Adressen, E-Mail-Adressen, Kontonummern) "
        "in den Chat, weder deine eigenen noch die anderer."
    ),
}
"""The note a warned question's answer starts with (or a warned answer ends with), by category."""
