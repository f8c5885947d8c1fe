"""Training: pretraining loop, fine-tuning per task kind, metrics."""
