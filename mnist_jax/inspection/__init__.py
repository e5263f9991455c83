"""What people look at: the model explainer, the figures of a run, your own images as MNIST digits."""
