"""The console's tabs, one module each; every view shows a ``ChainSnapshot`` it is given."""
