"""Accounts and sign-in: the accounts database, the login page and its limits, the quotas, and ``schulki user``."""
