"""What training and inference share: atomic file writes that never destroy their inputs."""
