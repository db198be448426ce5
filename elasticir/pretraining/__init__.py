"""Pre-training elastic encoders (issue 6): Starbucks-MAE (SMAE) and plain MLM on raw text.

`masking` draws the nested encoder/decoder whole-word masks, `text` streams raw text as token windows, `smae`
holds the losses, `pretrain` the loop, checkpoints and output (`PretrainConfig`, `pretrain`), `cli` the
`elasticir pretrain` command. Nothing is imported here, so registering the command keeps `elasticir --help`
free of torch's import time.
"""
