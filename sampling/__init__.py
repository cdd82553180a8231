"""Neighbor samplers over the Pin-Board graph (random walks, PinSage, fanout, pairs)."""
