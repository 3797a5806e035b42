"""Array operations shared by the models; one concept per module.

Activations are NHWC float32 (batch, height, width, channels); weights keep the
layout of the original checkpoints. Every op takes its array module from its input.
Models do not call these modules directly: they call ops on a backend
(`cvflow.backends`), whose CPU implementation is the code here.
"""
