"""GitHub event handlers: one module per event family, composed into one router here."""
