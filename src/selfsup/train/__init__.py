"""Training: the one pretraining loop (``selfsup.train.pretrain.pretrain``), the supervised
loop, optimisers, schedules, checkpoints and logging."""
