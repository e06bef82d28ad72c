"""Attack-class tests: each finding of issue 14 and the properties that keep it closed."""
