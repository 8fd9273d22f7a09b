"""Training: datasets of image/mask pairs split by case, and the Keras training loop."""
