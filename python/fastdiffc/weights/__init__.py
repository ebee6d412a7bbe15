"""Shipped model weights (*.safetensors) and their JSON configs."""
