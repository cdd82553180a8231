"""PinCLIP model library: backbones, hybrid fusion, losses. Independent of graph and training."""
