"""gptlib: the small GPT library built, line by line, by the gpt-from-scratch course."""

from gptlib.checkpoint import (Checkpoint, CheckpointError, RunCheckpoint, find_checkpoint, load_checkpoint, load_model,
                               save_checkpoint)
from gptlib.data import encode_corpus, get_batch, load_corpus, train_val_split
from gptlib.finetuning import (GPTClassifier, LoRALinear, apply_lora, count_parameters, finetune, freeze_layers,
                             load_adapter, merge_lora, save_adapter)
from gptlib.generation import generate, generate_tokens, sample_next, stream
from gptlib.model import GPT, MLP, PRESETS, Block, CausalSelfAttention, GPTConfig, KVCache, preset_config
from gptlib.tokenizer import BPETokenizer, CharTokenizer, UnknownCharacterError, load_tokenizer, tokenizer_from_dict
from gptlib.training import (TRAIN_PRESETS, NonFiniteLossError, TrainConfig, TrainResult, estimate_loss, lr_at, train,
                             train_config)
from gptlib.utils import get_device, inspect, seed_everything, time_block

__version__ = "0.1.0"

__all__ = [
    "BPETokenizer", "Block", "CausalSelfAttention", "CharTokenizer", "Checkpoint", "CheckpointError", "RunCheckpoint", "find_checkpoint", "GPT",
    "GPTClassifier", "GPTConfig", "KVCache", "LoRALinear", "MLP", "NonFiniteLossError", "PRESETS", "TRAIN_PRESETS",
    "TrainConfig", "TrainResult", "UnknownCharacterError", "apply_lora", "count_parameters", "encode_corpus",
    "estimate_loss", "finetune", "freeze_layers", "generate", "generate_tokens", "get_batch", "get_device",
    "inspect", "load_adapter", "load_checkpoint", "load_corpus", "load_model", "load_tokenizer", "lr_at",
    "merge_lora", "preset_config", "sample_next", "save_adapter", "save_checkpoint", "seed_everything", "stream",
    "time_block", "tokenizer_from_dict", "train", "train_config", "train_val_split",
]
