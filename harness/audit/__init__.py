"""Judge audits: hack probes built from a suite's cases, and the judge report card."""
