"""Local moderation of chat input and output: a school's own rules, matched on the school's own machines.

``rules.py`` reads the rules file (German word lists and patterns per category) and finds what matches;
``guard.py`` applies the configured outcome per category (pass, warn, block, notify) to a chat's input and to its
answer as it streams; ``flags.py`` keeps the flag records that the user's teachers and the admins see;
``answers.py`` holds the fixed German answers and notes.
"""
