"""The federated demo: a coordinator and three stores as local processes, on real faces."""
