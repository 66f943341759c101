"""The self-contained HTML report of a run, its charts, and plain-text views for the terminal."""
