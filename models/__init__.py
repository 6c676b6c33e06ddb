"""numpy reference layers, model definitions, datasets and the training loop shared by every backend."""
