"""Names the trainers accept, copied from their own source at a named release.

Each list was extracted from the release named beside it (ast over the class bodies for
the dataclasses; the argparse calls read for Megatron-LM; train.py's globals for nanoGPT),
not written from memory. When an adapter moves to a new release, re-extract the list from
that release and update the name here and in sweeper.export.adapters.RELEASES together.
"""

# transformers 5.24.0 (PyPI wheel), src/transformers/training_args.py: the annotated fields
# of class TrainingArguments (ast), in source order.
HF_RELEASE = "transformers 5.24.0"
HF_TRAINING_ARGUMENTS = [
    "output_dir",
    "per_device_train_batch_size",
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "optim",
    "optim_args",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "optim_target_modules",
    "gradient_accumulation_steps",
    "average_tokens_across_devices",
    "max_grad_norm",
    "label_smoothing_factor",
    "bf16",
    "fp16",
    "bf16_full_eval",
    "fp16_full_eval",
    "tf32",
    "activation_checkpointing",
    "activation_checkpointing_kwargs",
    "gradient_checkpointing",
    "gradient_checkpointing_kwargs",
    "torch_compile",
    "torch_compile_backend",
    "torch_compile_mode",
    "use_liger_kernel",
    "liger_kernel_config",
    "use_cache",
    "neftune_noise_alpha",
    "torch_empty_cache_steps",
    "auto_find_batch_size",
    "logging_strategy",
    "logging_steps",
    "logging_first_step",
    "log_on_each_node",
    "logging_nan_inf_filter",
    "include_num_input_tokens_seen",
    "log_level",
    "log_level_replica",
    "disable_tqdm",
    "report_to",
    "run_name",
    "project",
    "trackio_space_id",
    "trackio_bucket_id",
    "trackio_static_space_id",
    "eval_strategy",
    "eval_steps",
    "eval_delay",
    "per_device_eval_batch_size",
    "prediction_loss_only",
    "eval_on_start",
    "eval_do_concat_batches",
    "eval_use_gather_object",
    "eval_accumulation_steps",
    "include_for_metrics",
    "batch_eval_metrics",
    "save_only_model",
    "save_strategy",
    "save_steps",
    "save_on_each_node",
    "save_total_limit",
    "enable_jit_checkpoint",
    "push_to_hub",
    "hub_token",
    "hub_private_repo",
    "hub_model_id",
    "hub_strategy",
    "hub_always_push",
    "hub_revision",
    "load_best_model_at_end",
    "metric_for_best_model",
    "greater_is_better",
    "ignore_data_skip",
    "restore_callback_states_from_checkpoint",
    "full_determinism",
    "seed",
    "data_seed",
    "use_cpu",
    "accelerator_config",
    "parallelism_config",
    "dataloader_drop_last",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
    "dataloader_multiprocessing_context",
    "dataloader_in_order",
    "remove_unused_columns",
    "label_names",
    "train_sampling_strategy",
    "length_column_name",
    "ddp_find_unused_parameters",
    "ddp_bucket_cap_mb",
    "ddp_broadcast_buffers",
    "ddp_static_graph",
    "ddp_backend",
    "ddp_timeout",
    "fsdp",
    "fsdp_config",
    "deepspeed",
    "debug",
    "skip_memory_metrics",
    "do_train",
    "do_eval",
    "do_predict",
    "resume_from_checkpoint",
    "local_rank",
]
# src/transformers/trainer_utils.py, class SchedulerType: the values of lr_scheduler_type.
HF_SCHEDULER_TYPES = [
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
]
# src/transformers/optimization.py: keyword parameters of the schedule functions that
# lr_scheduler_kwargs reaches (get_cosine_with_min_lr_schedule_with_warmup, get_wsd_schedule).
HF_SCHEDULER_KWARGS = {
    "cosine_with_min_lr": ["num_cycles", "min_lr", "min_lr_rate"],
    "warmup_stable_decay": [
        "num_decay_steps",
        "num_stable_steps",
        "warmup_type",
        "decay_type",
        "min_lr_ratio",
        "num_cycles",
    ],
    "constant_with_warmup": [],
}

# torchtitan 0.3.0 (PyPI wheel). Trainer.Config (torchtitan/trainer.py) holds the sections
# training: TrainingConfig (config/configs.py), optimizer: OptimizersContainer.Config and its
# param_groups: list[ParamGroupConfig] (components/optimizer/optimizer.py), lr_scheduler:
# LRSchedulersContainer.Config (components/optimizer/lr_scheduler.py). The CLI is tyro over
# these dataclasses (config/manager.py), so a flag is --section.field with '_' or '-'.
TORCHTITAN_RELEASE = "torchtitan 0.3.0"
TORCHTITAN_FIELDS = {
    "training": [
        "local_batch_size",
        "global_batch_size",
        "seq_len",
        "max_norm",
        "steps",
        "enable_cpu_offload",
        "disable_cuda_graphs",
        "dtype",
        "mixed_precision_param",
        "mixed_precision_reduce",
        "gc_freq",
        "gc_debug",
    ],
    "lr_scheduler": ["warmup_steps", "total_steps", "decay_ratio", "decay_type", "min_lr_factor"],
    "optimizer": ["param_groups", "implementation", "optimizer_factory_kwargs_by_name"],
}
TORCHTITAN_PARAM_GROUP_FIELDS = ["pattern", "optimizer_name", "optimizer_kwargs"]
# default_adamw() in components/optimizer/optimizer.py: the optimizer_kwargs keys of AdamW.
TORCHTITAN_ADAMW_KWARGS = ["lr", "betas", "eps", "weight_decay"]
TORCHTITAN_DECAY_TYPES = ["linear", "sqrt", "cosine"]

# Megatron-LM commit 00caa53af30912914981c86f39db123961678bbd: megatron/training/arguments.py
# _add_learning_rate_args builds its group from training_config.py SchedulerConfig (flags are
# the field names with '-') plus --lr, --warmup, --min-lr, --decoupled-lr, --decoupled-min-lr;
# the batch/iteration flags come from TrainingConfig; --seq-length as at the previous commit.
# WSD: megatron/core/optimizer_param_scheduler.py get_lr (stable until lr_decay_steps -
# wsd_decay_steps, then lr_wsd_decay_style from max_lr to min_lr).
MEGATRON_RELEASE = "Megatron-LM 00caa53af30912914981c86f39db123961678bbd"
MEGATRON_FLAGS = [
    "--lr",
    "--lr-decay-style",
    "--lr-wsd-decay-style",
    "--lr-decay-iters",
    "--lr-decay-samples",
    "--lr-wsd-decay-iters",
    "--lr-wsd-decay-samples",
    "--lr-warmup-fraction",
    "--lr-warmup-iters",
    "--lr-warmup-samples",
    "--lr-warmup-init",
    "--warmup",
    "--min-lr",
    "--override-opt-param-scheduler",
    "--use-checkpoint-opt-param-scheduler",
    "--decoupled-lr",
    "--decoupled-min-lr",
    "--start-weight-decay",
    "--end-weight-decay",
    "--weight-decay-incr-style",
    "--micro-batch-size",
    "--batch-size",
    "--global-batch-size",
    "--rampup-batch-size",
    "--train-iters",
    "--train-samples",
    "--seq-length",
]
MEGATRON_DECAY_STYLES = ["constant", "linear", "cosine", "inverse-square-root", "WSD"]
MEGATRON_WSD_DECAY_STYLES = ["exponential", "linear", "cosine", "minus_sqrt"]

# nanoGPT commit e2221318e607eb5ee0669d6b7641af25a2111545 (karpathy/nanoGPT), train.py: the
# config globals above `config_keys`, which configurator.py lets a config file override.
NANOGPT_RELEASE = "nanoGPT e2221318e607eb5ee0669d6b7641af25a2111545"
NANOGPT_GLOBALS = [
    "out_dir",
    "eval_interval",
    "log_interval",
    "eval_iters",
    "eval_only",
    "always_save_checkpoint",
    "init_from",
    "wandb_log",
    "wandb_project",
    "wandb_run_name",
    "dataset",
    "gradient_accumulation_steps",
    "batch_size",
    "block_size",
    "n_layer",
    "n_head",
    "n_embd",
    "dropout",
    "bias",
    "learning_rate",
    "max_iters",
    "weight_decay",
    "beta1",
    "beta2",
    "grad_clip",
    "decay_lr",
    "warmup_iters",
    "lr_decay_iters",
    "min_lr",
    "backend",
    "device",
    "dtype",
    "compile",
]
