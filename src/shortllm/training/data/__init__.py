"""The rows a run trains on (packed text, Alpaca records, the held-out split, the stream) and which of them
each step and process uses (seeded order in memory, window-shuffled stream with a saved position)."""
