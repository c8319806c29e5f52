"""Using a trained run of any method on files and streams.

``predict`` scores whole files; ``watch`` follows a file, folder, URL or device step by step
(decoder thread, backbone batching, the same centred windows as ``predict``); ``events`` turns
step records into anomaly events with hysteresis; ``store`` keeps events, sources and stream
gaps in a SQLite file that ``avar events`` queries; ``bench`` times the streaming pipeline.
Every run comes through ``avar.runs.load_run``.
"""
