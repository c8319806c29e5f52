"""Real-time side of avar: turn per-step anomaly scores into events and keep them.

``events`` turns a stream of step records (``avar.serve.predict.StepRecord`` or anything with the same
fields) into closed anomaly events with hysteresis; ``store`` keeps events, sources and stream
gaps in a SQLite file that ``avar events`` queries.
"""
