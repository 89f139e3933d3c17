"""``schulki compliance``: the documents a school must write before it uses schulki, written from its live settings.

``facts.py`` reads every fact the documents state from the settings (and the retention periods the admin set in
the Admin tab, where the accounts database exists); ``documents.py`` writes the German texts in Markdown;
``pdf.py`` sets each as a PDF.
"""
