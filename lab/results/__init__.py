"""Results: the store, baselines, verdicts, comparisons, JUnit, nightly files and reports."""
