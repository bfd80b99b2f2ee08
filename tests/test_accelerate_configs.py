"""examples/accelerate_configs/*.yaml: loaded by Accelerate's own config loader, every key known to `accelerate launch`.
examples/accelerate_configs/*.yaml: loaded by Accelerate's own config loader, every key known to `accelerate launch`."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import launch_command_parser
from accelerate.utils import DistributedType

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "accelerate_configs"
EXPECTED = {
    "multi_gpu.yaml": (DistributedType.MULTI_GPU, 1),
    "multi_node.yaml": (DistributedType.MULTI_GPU, 2),
    "fsdp.yaml": (DistributedType.FSDP, 1),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 1),
}


def test_every_config_file_is_tested():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerates_loader(name):
    config = load_config_from_file(str(CONFIGS / name))
    assert isinstance(config, ClusterConfig)
    distributed_type, machines = EXPECTED[name]
    assert config.distributed_type == distributed_type and config.num_machines == machines
    assert config.mixed_precision == "bf16" and not config.use_cpu
    # `accelerate launch` copies every entry of the nested sections onto its own options (fsdp_* for FSDP): an
    # entry it does not know would be silently ignored, so each must be one of its options.
    options = {action.dest for action in launch_command_parser()._actions}
    nested = {**{k if k.startswith("fsdp") else f"fsdp_{k}": v for k, v in config.fsdp_config.items()},
              **config.deepspeed_config}
    unknown = sorted(set(nested) - options)
    assert not unknown, f"{name}: keys unknown to accelerate launch: {unknown}"
    top_level = set(config.to_dict()) - {"fsdp_config", "deepspeed_config"}
    assert top_level <= options | {"compute_environment", "distributed_type", "use_cpu"}  # use_cpu is --cpu


def test_fsdp_wraps_an_existing_layer_class_and_zero2_is_stage_2():
    from adversarial_midibert import modeling_adv_midibert

    fsdp = load_config_from_file(str(CONFIGS / "fsdp.yaml")).fsdp_config
    assert hasattr(modeling_adv_midibert, fsdp["fsdp_transformer_layer_cls_to_wrap"])
    no_split = modeling_adv_midibert.AdvMidiBertPreTrainedModel._no_split_modules
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] in no_split
    assert fsdp["fsdp_sharding_strategy"] == "SHARD_GRAD_OP" and fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    deepspeed = load_config_from_file(str(CONFIGS / "deepspeed_zero2.yaml")).deepspeed_config
    assert deepspeed["zero_stage"] == 2 and deepspeed["gradient_clipping"] > 0
