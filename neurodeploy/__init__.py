"""neurodeploy: train robust spiking neural networks and deploy them to Loihi-class hardware.

Importing the package changes no global state (environment, warning filters);
the command line's entry point (:func:`neurodeploy.cli.main`) sets what a
command needs.
"""

__version__ = "0.1.0"
