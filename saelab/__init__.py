"""saelab: a lab for why sparse-autoencoder latents die, and which change brings them back."""

__version__ = "0.1.0"
