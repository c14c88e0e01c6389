"""The top floor: the `loyalnet` command, the admins' console and the demos.

Everything here may import every part (store_node, coordinator, simulations) and the
foundation (loyalnet); nothing below imports this package.
"""
