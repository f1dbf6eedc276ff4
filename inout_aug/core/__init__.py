"""The core every augmenter builds on: the Augmenter contract, sample structures, the registry, file I/O."""
