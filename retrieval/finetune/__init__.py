"""Fine-tuning on (image, caption) pairs: read pairs, train contrastively, evaluate retrieval.

pairs (read a pairs file) -> images (decode, cache, augment, split) -> trainable (towers, locks,
text cache) -> loss (CLIP loss, learnable temperature) -> loop (schedule, checkpoints, resume);
evaluate holds the retrieval metrics that both training's validation and `mmsearch eval` use.
"""
