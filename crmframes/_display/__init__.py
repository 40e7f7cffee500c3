"""Display sinks for the engine's events; the core never imports the widget or tqdm stacks."""
