"""Models, encoders, the query layer and fine-tuning for mmsearch."""
