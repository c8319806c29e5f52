"""Privacy before storage: find faces and licence plates and cover them before any frame is
stored, shared or turned into features (MAVAD paper, sec. III-A)."""
