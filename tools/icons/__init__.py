"""Data makers for fine-tuning benchmarks on icon sets (not installed)."""
