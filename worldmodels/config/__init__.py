"""A pipeline's settings: the schema (one frozen dataclass per section, :mod:`.schema`) and how a
pipeline file, the file it extends and ``--set`` overrides are read into it (:mod:`.loading`).
The names most code needs are importable from here."""

from worldmodels.config.loading import (
    PIPELINES_DIR,
    dump_yaml,
    load_pipeline,
    parse_override,
    pipeline_files,
    pipeline_from_dict,
    read_pipeline_tree,
    read_yaml,
    resolve_pipeline_path,
)
from worldmodels.config.schema import (
    MODEL_FRAME_SIZE,
    READOUT_INPUTS,
    SECTIONS,
    CollectConfig,
    ConfigError,
    ControllerConfig,
    DataConfig,
    DreamerConfig,
    EnvConfig,
    EvaluateConfig,
    IterateConfig,
    MDNRNNConfig,
    OracleConfig,
    PipelineConfig,
    ReadoutConfig,
    ReportConfig,
    RuntimeConfig,
    VAEConfig,
)

__all__ = [
    "MODEL_FRAME_SIZE", "PIPELINES_DIR", "READOUT_INPUTS", "SECTIONS", "CollectConfig", "ConfigError",
    "ControllerConfig", "DataConfig", "DreamerConfig", "EnvConfig", "EvaluateConfig", "IterateConfig",
    "MDNRNNConfig", "OracleConfig", "PipelineConfig", "ReadoutConfig", "ReportConfig", "RuntimeConfig", "VAEConfig",
    "dump_yaml", "load_pipeline", "parse_override", "pipeline_files", "pipeline_from_dict", "read_pipeline_tree",
    "read_yaml", "resolve_pipeline_path",
]
