"""Training: the model factory (`model`), strategies (`strategy`, `multiworker`), the one training core
(`core`: epoch plan, ordered callbacks, fit or the multi-worker loop), callbacks, backup and schedules,
and a whole run (`run`)."""
