"""actorflow actors: the shared-dispatcher actor type, session and supervisor actors."""
