"""Pre-training elastic encoders: Starbucks-MAE (SMAE) and plain MLM on raw text.

`masking` draws the nested encoder/decoder whole-word masks, `text` streams raw text as token windows, `smae`
holds the losses, `pretrain` the loop, checkpoints and output (`PretrainConfig`, `pretrain`); the command
is `elasticir pretrain` in elasticir.cli. Nothing is imported here, so `elasticir --help` stays free of torch's
import time.
"""
