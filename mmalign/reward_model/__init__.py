"""Training and data for dense reward heads (`model.kind: reward`): the adapter between the
dense datasets (RichHF-18K, the toy flaws set) and `mmalign.rewards.dense`."""
