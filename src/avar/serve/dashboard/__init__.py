"""``avar serve``: the web dashboard over an event store (:mod:`avar.serve.dashboard.app`),
its read-only queries (:mod:`.reader`) and the 'analyse a file' uploads (:mod:`.jobs`)."""
