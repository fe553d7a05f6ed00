"""The imperative shell: reconcilers and watchers that drive the core through adapters."""
