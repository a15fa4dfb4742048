"""Scanning, decoding, the embed pipeline, and the FAISS and SQLite stores."""
