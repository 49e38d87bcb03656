"""The LoRA update, in one place: everything gtapp knows about a LoRA fine-tune's result.

    recipe.py       the contract an update depends on (base fingerprint, targets, rank, alpha,
                    the seeded initial A) and its fingerprints
    factors.py      Factors ({module: (A, B)}) and the batched Gram algebra on them
    peft_format.py  the adapter folder format: its file names and keys, the one reader of
                    trusted folders and the one writer
    peft_model.py   LoRA on a loaded model: attach with the seeded init, read the live factors
    update.py       UpdateVector: the update the pipeline passes (adapter -> mapper -> adapter)
    checkpoints.py  an update from two full checkpoints (a dense fine-tune, for comparison)
    validate/       untrusted uploads, one module per step (container, config, header, checks)

Nothing here depends on a stage of the pipeline (only on gtapp.files, and on gtapp.models to
load a checkpoint by name); every stage (fine-tuning, shadow pairs, mappers, generation, the
dashboard's validation child) uses these modules.
"""
