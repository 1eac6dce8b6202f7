"""The bad-input suite: every public callable, a table of bad inputs, and a count of the outcomes.

``specs.py`` describes each public callable (a small valid call and what its arguments are);
``test_bad_inputs.py`` generates the bad inputs from those descriptions, runs each one as its own
pytest item and classifies the outcome; ``conftest.py`` prints the counts at the end of the session.
"""
