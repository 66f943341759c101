"""Numbers from run folders: score summaries, comparisons, agreement, sequential intervals,
statistics.
"""
