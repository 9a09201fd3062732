"""Sizes that make the SLURM tests' jobs take seconds on 2 shared cores (plumbing, not learning)."""

# configs/pretrain/demo.yaml shrunk: 8 iterations per epoch, checkpoints every 4, deterministic.
PRETRAIN_OVERRIDES = [
    "model.dim=16",
    "model.K=40",
    "model.bn_splits=2",
    "data.crop_size=32",
    "data.num_workers=0",
    "data.samples_per_epoch=64",
    "optim.base_batch_size=8",
    "batch_size=8",
    "checkpoint.every_iters=4",
    "checkpoint.keep_last=20",
    "log.every_iters=1",
    "log.tensorboard=false",
    "deterministic=true",
    "device=cpu",
    "knn.every_epochs=0",
]

# The demo detector (configs/Demo/demo_digits_R18_FPN_*.yaml) for 2 iterations of 2 images, then its
# evaluation on the test scenes: ~16 s per run here.
DETECTOR_OPTS = [
    "SOLVER.MAX_ITER",
    "2",
    "SOLVER.STEPS",
    "(1,)",
    "SOLVER.WARMUP_ITERS",
    "0",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "1000",
    "TEST.PRECISE_BN.ENABLED",
    "False",
    "DATALOADER.NUM_WORKERS",
    "0",
]
