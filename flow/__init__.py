"""actorflow engine: graphs, tasks, context, sessions, codec and stores."""
