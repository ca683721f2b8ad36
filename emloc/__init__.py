"""EMLoC: training-free many-shot multimodal in-context learning with compressed task memories."""
