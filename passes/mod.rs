//! The passes, one file (or folder) each, the one registry of passes, and the stages presets
//! are built from.
//!
//! Every pass file opens with its rewrite in one line, its preconditions, its error bound and
//! the paper section it implements. Names are kebab-case and verb first; files use the same
//! words in snake_case.

mod calibrate;
mod eliminate_dead_nodes;
mod eliminate_identity;
mod expand_conv_transpose;
mod expand_resize;
mod expose_integer_io;
mod fold_batch_norm;
mod fold_constants;
mod fold_dyadic_requant;
mod fuse_attention_mask;
mod fuse_gelu;
mod fuse_layer_norm;
mod fuse_softmax;
mod legalize;
pub(crate) mod lower_activations_to_table;
mod lower_gelu_to_ibert_erf;
mod lower_gelu_to_shiftgelu;
mod lower_gelu_to_table;
mod lower_layer_norm_to_int;
mod lower_linear_to_integer;
mod lower_softmax_to_exp_table;
mod lower_softmax_to_ibert_exp;
mod lower_softmax_to_shiftmax;
mod measure_sensitivity;
mod quantize;
mod replace_gelu_with_relu;
mod smooth_layer_norm;
mod split_residual_groups;
mod upgrade_opset;

use crate::pass::{OptionInfo, PassInfo, Phase, Phases, Preset};

/// The softmax lowerings' probability width.
const OUT_BITS: OptionInfo = OptionInfo {
    name: "out-bits",
    default: "16",
    help: "bits of the probabilities (8 or 16), at scale 2^-(out-bits-1); the reader requantizes them",
};

/// `quantize`: a float model becomes a planned one.
const PLANS: Phases = Phases {
    runs_on: &[Phase::Float],
    leaves: Some(Phase::Planned),
    needs: "a float model with calibration statistics (run calibrate before it)",
};

/// The lowerings: plans become integer ops.
/// `split-residual-groups`: refines the weight plans of a planned model.
const REPLANS: Phases = Phases {
    runs_on: &[Phase::Planned],
    leaves: None,
    needs: "quantization plans (run calibrate and quantize before it)",
};

const LOWERS: Phases = Phases {
    runs_on: &[Phase::Planned, Phase::Lowered],
    leaves: Some(Phase::Lowered),
    needs: "quantization plans (run calibrate and quantize before it)",
};

/// Algebra on lowered integer ops.
const FOLDS: Phases = Phases {
    runs_on: &[Phase::Lowered, Phase::Legal],
    leaves: None,
    needs: "a lowered model (run a lowering before it)",
};

const LEGALIZES: Phases = Phases {
    runs_on: &[Phase::Lowered, Phase::Legal],
    leaves: Some(Phase::Legal),
    needs: "a lowered model (run a lowering before it)",
};

const LEGAL_ONLY: Phases = Phases {
    runs_on: &[Phase::Legal],
    leaves: None,
    needs: "a legalized model (run legalize before it)",
};

/// What every pass file imports.
mod prelude {
    pub use crate::Result;
    pub use crate::ir::{Model, NodeId, ValueId};
    pub use crate::pass::pattern::MAX_ROUNDS;
    pub(crate) use crate::pass::rewriter::is_removable;
    pub use crate::pass::{
        Match, Pass, PassContext, PassOptions, Pattern, Rewriter, Roots, apply_greedily,
    };
}

/// Every pass intone has.
pub const PASSES: &[PassInfo] = &[
    PassInfo {
        name: "eliminate-dead-nodes",
        summary: "remove ops and initializers whose values nothing reads",
        exact: true,
        phases: Phases::ANY,
        options: &[],
        build: |_| Ok(Box::new(eliminate_dead_nodes::EliminateDeadNodes)),
    },
    PassInfo {
        name: "eliminate-identity",
        summary: "read through Identity ops",
        exact: true,
        phases: Phases::ANY,
        options: &[],
        build: |_| Ok(Box::new(eliminate_identity::EliminateIdentity)),
    },
    PassInfo {
        name: "fold-constants",
        summary: "evaluate ops whose inputs are all known at compile time, shape arithmetic included",
        exact: true,
        phases: Phases::ANY,
        options: &[OptionInfo {
            name: "max-elements",
            default: "1048576",
            help: "largest result (in elements) that is folded into a constant",
        }],
        build: |options| Ok(Box::new(fold_constants::FoldConstants::new(options)?)),
    },
    PassInfo {
        name: "fold-batch-norm",
        summary: "fold inference BatchNormalization into the Conv/ConvTranspose/Gemm before it, or make it a per-channel Mul and Add",
        exact: false,
        phases: Phases::FLOAT,
        options: &[],
        build: |_| Ok(Box::new(fold_batch_norm::FoldBatchNorm)),
    },
    PassInfo {
        name: "expand-conv-transpose",
        summary: "turn ConvTranspose with a constant weight into a Conv and data movement (a pixel shuffle, or zeros between the input's elements)",
        exact: false,
        phases: Phases::FLOAT,
        options: &[],
        build: |_| Ok(Box::new(expand_conv_transpose::ExpandConvTranspose)),
    },
    PassInfo {
        name: "expand-resize",
        summary: "turn Resize with compile-time sizes into Gathers (nearest) or MatMuls by interpolation matrices (linear)",
        exact: false,
        phases: Phases::FLOAT,
        options: &[],
        build: |_| Ok(Box::new(expand_resize::ExpandResize)),
    },
    PassInfo {
        name: "calibrate",
        summary: "run the float model on the calibration samples and record statistics of every float value",
        exact: true,
        phases: Phases::FLOAT,
        options: &[],
        build: |_| Ok(Box::new(calibrate::Calibrate)),
    },
    PassInfo {
        name: "smooth-layer-norm",
        summary: "move LayerNorm output outlier channels into the weights of the MatMuls reading them (SmoothQuant), exactly in float",
        exact: true,
        phases: Phases::FLOAT,
        options: &[OptionInfo {
            name: "alpha",
            default: "0.5",
            help: "migration strength: s_c = max|y_c|^alpha / max|w_c|^(1-alpha); 0 turns it off",
        }],
        build: |options| Ok(Box::new(smooth_layer_norm::SmoothLayerNorm::new(options)?)),
    },
    PassInfo {
        name: "quantize",
        summary: "choose bits, sign and scale of every calibrated value (the plan lowering follows)",
        exact: true,
        phases: PLANS,
        options: &[
            OptionInfo {
                name: "bits",
                default: "8",
                help: "bits of activations that feed matmuls",
            },
            OptionInfo {
                name: "residual-bits",
                default: "16",
                help: "bits of the residual stream (carried in int32)",
            },
        ],
        build: |options| Ok(Box::new(quantize::Quantize::new(options)?)),
    },
    PassInfo {
        name: "split-residual-groups",
        summary: "plan weights as residual expansions (K terms of b bits aligned in int32, terms ≥ 2 on the channels with the largest residual) or an ensemble of M b-bit networks (PIPE)",
        // An ensemble's Mean of M copies can round the float model's outputs by an ulp.
        exact: false,
        phases: REPLANS,
        options: &[
            OptionInfo {
                name: "bits",
                default: "",
                help: "bits of every term, 2..=8 (2 is ternary); default --weight-bits (8)",
            },
            OptionInfo {
                name: "order",
                default: "",
                help: "terms per weight, where int32 holds their sum; default --residual-order (1)",
            },
            OptionInfo {
                name: "sparsity",
                default: "",
                help: "fraction of output channels without terms ≥ 2; default --residual-sparsity (0)",
            },
            OptionInfo {
                name: "budget",
                default: "",
                help: "instead of sparsity: terms ≥ 2 on the channels with the most output noise per MAC, up to this fraction of their full cost, model-wide; default --residual-budget",
            },
            OptionInfo {
                name: "budget-by",
                default: "",
                help: "how the budget ranks channels: output (measured output noise of each layer alone, with calibration data) or layer (each layer's own output noise); default --budget-by (output)",
            },
            OptionInfo {
                name: "ensemble",
                default: "",
                help: "copies of the network with single-term weights, outputs averaged; default --ensemble (1)",
            },
        ],
        build: |options| {
            Ok(Box::new(split_residual_groups::SplitResidualGroups::new(
                options,
            )?))
        },
    },
    PassInfo {
        name: "measure-sensitivity",
        summary: "with --sensitivity: the output noise quantizing each planned weight alone causes on calibration samples, ranked in the report (activations are ranked after the compilation)",
        exact: true,
        phases: REPLANS,
        options: &[],
        build: |_| Ok(Box::new(measure_sensitivity::MeasureSensitivity)),
    },
    PassInfo {
        name: "lower-linear-to-integer",
        summary: "MatMul/Gemm/Conv to MatMulInteger/ConvInteger with 8-bit weights (--matmul-operands), residuals and data movement in integers",
        exact: false,
        phases: LOWERS,
        options: &[],
        build: |_| Ok(Box::new(lower_linear_to_integer::LowerLinear)),
    },
    PassInfo {
        name: "fuse-gelu",
        summary: "erf, tanh and sigmoid GELU forms and com.microsoft Gelu/BiasGelu/FastGelu become one Gelu (opset 20)",
        exact: true,
        phases: Phases::FLOAT,
        options: &[],
        build: |_| Ok(Box::new(fuse_gelu::FuseGelu)),
    },
    PassInfo {
        name: "fuse-layer-norm",
        summary: "the decomposed LayerNorm of opset < 17 exports becomes LayerNormalization",
        exact: true,
        phases: Phases::FLOAT,
        options: &[],
        build: |_| Ok(Box::new(fuse_layer_norm::FuseLayerNorm)),
    },
    PassInfo {
        name: "fuse-softmax",
        summary: "Exp / ReduceSum(Exp) over one axis (with or without the max subtraction) becomes Softmax",
        exact: true,
        phases: Phases::FLOAT,
        options: &[],
        build: |_| Ok(Box::new(fuse_softmax::FuseSoftmax)),
    },
    PassInfo {
        name: "fuse-attention-mask",
        summary: "scores + f(int mask) (Cast/Sub/Mul chains) becomes Where(mask, scores, f(0)): no float mask",
        exact: true,
        phases: Phases::FLOAT,
        options: &[],
        build: |_| Ok(Box::new(fuse_attention_mask::FuseAttentionMask)),
    },
    PassInfo {
        name: "replace-gelu-with-relu",
        summary: "every GELU becomes ReLU; correct-relu-bias compensates the next bias for the mean shift",
        exact: false,
        phases: Phases::FLOAT,
        options: &[
            OptionInfo {
                name: "correct-relu-bias",
                default: "false",
                help: "add E[GELU(x)] − E[ReLU(x)] (from calibration statistics) through the next layer's bias",
            },
            OptionInfo {
                name: "refit",
                default: "false",
                help: "refit the next layer's weight and bias by ridge least squares on calibration samples, so that FC2(ReLU(x)) matches FC2(GELU(x)); replaces the bias correction where it applies",
            },
            OptionInfo {
                name: "ridge",
                default: "0.3",
                help: "the refit's pull toward the old weight, relative to the mean ReLU output energy",
            },
        ],
        build: |options| {
            Ok(Box::new(replace_gelu_with_relu::ReplaceGeluWithRelu::new(
                options,
            )?))
        },
    },
    PassInfo {
        name: "lower-softmax-to-shiftmax",
        summary: "Softmax in integers: I-ViT Shiftmax (ShiftExp table, integer normalisation)",
        exact: false,
        phases: LOWERS,
        options: &[
            OUT_BITS,
            OptionInfo {
                name: "n",
                default: "15",
                help: "ShiftExp's clamp exponent: inputs below -n/log2(e) give 0",
            },
        ],
        build: |options| {
            Ok(Box::new(lower_softmax_to_shiftmax::LowerSoftmax::shiftmax(
                options,
            )?))
        },
    },
    PassInfo {
        name: "lower-softmax-to-exp-table",
        summary: "Softmax in integers: the exponential itself tabulated, then Shiftmax's integer normalisation",
        exact: false,
        phases: LOWERS,
        options: &[OUT_BITS],
        build: lower_softmax_to_exp_table::build,
    },
    PassInfo {
        name: "lower-softmax-to-ibert-exp",
        summary: "Softmax in integers with I-BERT's polynomial i-exp",
        exact: false,
        phases: LOWERS,
        options: &[OUT_BITS],
        build: lower_softmax_to_ibert_exp::build,
    },
    PassInfo {
        name: "lower-gelu-to-shiftgelu",
        summary: "GELU in integers: I-ViT ShiftGELU over int8 inputs (a 256-entry table)",
        exact: false,
        phases: LOWERS,
        options: &[],
        build: |_| Ok(Box::new(lower_gelu_to_shiftgelu::shift_gelu())),
    },
    PassInfo {
        name: "lower-gelu-to-table",
        summary: "GELU in integers: the function itself (erf, tanh form or QuickGelu) tabulated over int8 inputs",
        exact: false,
        phases: LOWERS,
        options: &[],
        build: |_| lower_gelu_to_table::build(),
    },
    PassInfo {
        name: "lower-gelu-to-ibert-erf",
        summary: "GELU in integers: I-BERT i-GELU (polynomial erf) over int8 inputs",
        exact: false,
        phases: LOWERS,
        options: &[],
        build: |_| lower_gelu_to_ibert_erf::build(),
    },
    PassInfo {
        name: "lower-activations-to-table",
        summary: "Tanh, Sigmoid, HardSwish, HardSigmoid, LeakyRelu, Elu, Softplus, Mish and x·f(x) gates (SiLU) in integers: int8 input, a 256-entry table",
        exact: false,
        phases: LOWERS,
        options: &[],
        build: |_| Ok(Box::new(lower_activations_to_table::LowerActivations)),
    },
    PassInfo {
        name: "lower-layer-norm-to-int",
        summary: "LayerNormalization in int32: I-LayerNorm with Newton's integer square root",
        exact: false,
        phases: LOWERS,
        options: &[],
        build: |_| Ok(Box::new(lower_layer_norm_to_int::LowerLayerNorm)),
    },
    PassInfo {
        name: "fold-dyadic-requant",
        summary: "move-dequantizations, close-float-islands, fold-requantizations: one requantization per edge",
        exact: false,
        phases: FOLDS,
        options: &[],
        build: |_| Ok(Box::new(fold_dyadic_requant::FoldDyadicRequant)),
    },
    PassInfo {
        name: "move-dequantizations",
        summary: "data movement, Concat, Shape and ReduceMean of dequantized values run on the integers",
        exact: true,
        phases: FOLDS,
        options: &[],
        build: |_| Ok(Box::new(fold_dyadic_requant::MoveDequantizations)),
    },
    PassInfo {
        name: "close-float-islands",
        summary: "a quantization of a dequantized value becomes one requantization",
        exact: false,
        phases: FOLDS,
        options: &[],
        build: |_| Ok(Box::new(fold_dyadic_requant::CloseFloatIslands)),
    },
    PassInfo {
        name: "fold-requantizations",
        summary: "fold biases into requantization offsets; merge requantization chains and requant→dequantize pairs",
        exact: false,
        phases: FOLDS,
        options: &[],
        build: |_| Ok(Box::new(fold_dyadic_requant::FoldRequantizations)),
    },
    PassInfo {
        name: "legalize",
        summary: "expand intone's internal ops into standard ONNX for a target, then prove no integer op can overflow",
        exact: true,
        phases: LEGALIZES,
        options: &[OptionInfo {
            name: "target",
            default: "integer",
            help: "integer (Div-based shifts, opset ≥ 15) or integer-opset28 (signed BitShift)",
        }],
        build: |options| Ok(Box::new(legalize::Legalize::new(options)?)),
    },
    PassInfo {
        name: "expose-integer-io",
        summary: "inputs and outputs become the integers around the quantization (scales in metadata)",
        exact: true,
        phases: LEGAL_ONLY,
        options: &[],
        build: |_| Ok(Box::new(expose_integer_io::ExposeIntegerIo)),
    },
    PassInfo {
        name: "upgrade-opset",
        summary: "rewrite every op to its form at a newer opset (attributes that became inputs, Softmax axes)",
        exact: true,
        phases: Phases::ANY,
        options: &[OptionInfo {
            name: "to",
            default: "18",
            help: "the opset to import (13..=21); models already at or above it are left alone",
        }],
        build: |options| Ok(Box::new(upgrade_opset::UpgradeOpset::new(options)?)),
    },
];

/// The stages presets are built from. Each says why its passes sit where they do.
mod stages {
    use crate::pass::{Stage, StageKind};

    /// Identity first so folding sees through it; dead-node removal last collects what
    /// folding left behind.
    pub const CLEANUP: Stage = Stage {
        kind: StageKind::Canonicalize,
        passes: "eliminate-identity,fold-constants,eliminate-dead-nodes",
    };
    /// Upgrading first means folding and the later passes see one version of each op; batch
    /// norms fold once their parameters are constants, and into a ConvTranspose before it is
    /// expanded; Resize sizes are constants once shape arithmetic is folded.
    pub const CANONICALIZE_18: Stage = Stage {
        kind: StageKind::Canonicalize,
        passes: "upgrade-opset(to=18),eliminate-identity,fold-constants,fold-batch-norm,\
                 expand-conv-transpose,expand-resize,eliminate-dead-nodes",
    };
    /// Opset 20 has Gelu.
    pub const CANONICALIZE_20: Stage = Stage {
        kind: StageKind::Canonicalize,
        passes: "upgrade-opset(to=20),eliminate-identity,fold-constants,fold-batch-norm,\
                 expand-conv-transpose,expand-resize,eliminate-dead-nodes",
    };
    /// The fusers run before calibration so that calibration observes the inputs of the fused
    /// ops.
    pub const FUSE: Stage = Stage {
        kind: StageKind::Fuse,
        passes: "fuse-softmax,fuse-layer-norm,fuse-gelu,fuse-attention-mask,eliminate-dead-nodes",
    };
    /// Calibration observes the canonical float model; quantize writes the plans.
    pub const PLAN: Stage = Stage {
        kind: StageKind::Plan,
        passes: "calibrate,smooth-layer-norm,quantize,split-residual-groups,measure-sensitivity",
    };
    /// The correction needs the GELU inputs' statistics (the refit replaces it where a
    /// constant-weight layer follows); calibrating again then plans the ReLU model that is
    /// actually compiled.
    pub const PLAN_RELU: Stage = Stage {
        kind: StageKind::Plan,
        passes: "calibrate,replace-gelu-with-relu(correct-relu-bias=true,refit=true),calibrate,\
                 smooth-layer-norm,quantize,split-residual-groups,measure-sensitivity",
    };
    pub const LOWER_LINEAR: Stage = Stage {
        kind: StageKind::Lower,
        passes: "lower-linear-to-integer",
    };
    /// The non-linear lowerings close the islands the linear lowering leaves.
    pub const LOWER_IVIT: Stage = Stage {
        kind: StageKind::Lower,
        passes: "lower-linear-to-integer,lower-softmax-to-shiftmax,lower-gelu-to-shiftgelu,\
                 lower-activations-to-table,lower-layer-norm-to-int",
    };
    pub const LOWER_IVIT_RELU: Stage = Stage {
        kind: StageKind::Lower,
        passes: "lower-linear-to-integer,lower-softmax-to-shiftmax,lower-activations-to-table,\
                 lower-layer-norm-to-int",
    };
    /// I-ViT's structure with the functions themselves in the tables.
    pub const LOWER_EXACT_TABLES: Stage = Stage {
        kind: StageKind::Lower,
        passes: "lower-linear-to-integer,lower-softmax-to-exp-table,lower-gelu-to-table,\
                 lower-activations-to-table,lower-layer-norm-to-int",
    };
    pub const LOWER_IBERT: Stage = Stage {
        kind: StageKind::Lower,
        passes: "lower-linear-to-integer,lower-softmax-to-ibert-exp,lower-gelu-to-ibert-erf,\
                 lower-activations-to-table,lower-layer-norm-to-int",
    };
    /// Folding merges the lowerings' requantizations; legalize expands what is left into
    /// standard ONNX and proves ranges.
    pub const LEGALIZE_INTEGER: Stage = Stage {
        kind: StageKind::Legalize,
        passes: "fold-dyadic-requant,legalize(target=integer)",
    };
    /// Quantizations of constants (class tokens) fold into integer constants.
    pub const FINALIZE: Stage = Stage {
        kind: StageKind::Finalize,
        passes: "fold-constants,eliminate-dead-nodes",
    };
}

use stages::*;

/// Named pipelines.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "none",
        summary: "no passes: an exact round trip of the input",
        stages: &[],
    },
    Preset {
        name: "canonicalize",
        summary: "one opset (18+) for every op, then cleanup: the form every later pass expects",
        stages: &[CANONICALIZE_18],
    },
    Preset {
        name: "linear",
        summary: "integer linear layers: canonicalize, calibrate, quantize, lower MatMul/Gemm/Conv, legalize",
        stages: &[
            CANONICALIZE_18,
            PLAN,
            LOWER_LINEAR,
            LEGALIZE_INTEGER,
            FINALIZE,
        ],
    },
    Preset {
        name: "ivit",
        summary: "integer-only: fuse GELU/LayerNorm/Softmax/mask, calibrate, quantize, lower linear ops, Shiftmax, ShiftGELU, I-LayerNorm, fold, legalize",
        stages: &[
            CANONICALIZE_20,
            FUSE,
            PLAN,
            LOWER_IVIT,
            LEGALIZE_INTEGER,
            FINALIZE,
        ],
    },
    Preset {
        name: "ivit-exact",
        summary: "integer-only as ivit, with the exponential and GELU themselves in the tables (same ops, same cost, no kernel approximation)",
        stages: &[
            CANONICALIZE_20,
            FUSE,
            PLAN,
            LOWER_EXACT_TABLES,
            LEGALIZE_INTEGER,
            FINALIZE,
        ],
    },
    Preset {
        name: "ivit-relu",
        summary: "ivit with every GELU replaced by ReLU, the next layers refitted by least squares on the calibration samples",
        stages: &[
            CANONICALIZE_20,
            FUSE,
            PLAN_RELU,
            LOWER_IVIT_RELU,
            LEGALIZE_INTEGER,
            FINALIZE,
        ],
    },
    Preset {
        name: "ibert",
        summary: "integer-only with I-BERT's polynomial exp and erf instead of the shift-based kernels",
        stages: &[
            CANONICALIZE_20,
            FUSE,
            PLAN,
            LOWER_IBERT,
            LEGALIZE_INTEGER,
            FINALIZE,
        ],
    },
    Preset {
        name: "cleanup",
        summary: "canonical cleanup: drop Identity, fold constants and shape arithmetic, drop dead nodes",
        stages: &[CLEANUP],
    },
];
