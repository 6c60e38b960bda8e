"""mmalign: align multimodal generative models with human preferences."""
