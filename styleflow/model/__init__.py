"""The model layer: VGG19 (its layout, weights and feature extractor), the convolution kernels
it runs on, and the facts of the machine and TensorFlow runtime those choices depend on."""
