"""loyalnet: federated face recognition for retail loyalty programmes.

This package holds what every role shares: the command line, configuration, the locations of
data and weights, and the user-facing error type. Face code lives in ``store_node`` only.
"""

__version__ = "0.1.0"
