"""The run configuration, split by concern, each part owning its validators and its share of the run id."""
