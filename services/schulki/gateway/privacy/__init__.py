"""Data protection: the retention purge, and a user's data as a whole (export and deletion)."""
