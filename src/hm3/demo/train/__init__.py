"""Fine-tuning the demo's original classifiers from the base model (first run only; cached)."""
