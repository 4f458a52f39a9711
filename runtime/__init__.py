"""actorflow runtime: the host-facing Runtime facade, daemon, admin socket and shell."""
