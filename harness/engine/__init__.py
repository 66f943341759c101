"""The run engine: plan the work items, judge them with retries and limits, and keep the run folder."""
