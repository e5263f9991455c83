"""The primer's models on MNIST: the zoo, single configs, the perceptron rule."""
