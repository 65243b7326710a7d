"""neurodeploy: train robust spiking neural networks and deploy them to Loihi-class hardware."""

__version__ = "0.1.0"
