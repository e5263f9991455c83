"""Neural-network math of the primer: activations and losses, pure jax.numpy."""
