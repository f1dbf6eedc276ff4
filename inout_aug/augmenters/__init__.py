"""The built-in augmenters: MemSeg regions (out-of-distribution), diffusion defects (in-distribution), InOutMix."""
