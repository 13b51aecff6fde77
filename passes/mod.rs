//! The passes, one file each, and the one registry of passes and presets.
//!
//! Every pass file opens with its rewrite in one line, its preconditions, its error bound and
//! the paper section it implements. Names are kebab-case and verb first; files use the same
//! words in snake_case.

mod calibrate;
mod eliminate_dead_nodes;
mod eliminate_identity;
mod fold_constants;
mod fold_dyadic_requant;
mod legalize;
mod lower_linear_to_integer;
mod quantize;
mod upgrade_opset;

use crate::pass::{OptionInfo, PassInfo, Preset};

/// What every pass file imports.
mod prelude {
    pub use crate::Result;
    pub use crate::ir::{Model, NodeId, ValueId};
    pub use crate::pass::pattern::MAX_ROUNDS;
    pub(crate) use crate::pass::rewriter::is_removable;
    pub use crate::pass::{
        Match, Pass, PassContext, PassOptions, Pattern, Rewriter, apply_greedily,
    };
}

/// Every pass intone has.
pub const PASSES: &[PassInfo] = &[
    PassInfo {
        name: "eliminate-dead-nodes",
        summary: "remove ops and initializers whose values nothing reads",
        exact: true,
        options: &[],
        build: |_| Ok(Box::new(eliminate_dead_nodes::EliminateDeadNodes)),
    },
    PassInfo {
        name: "eliminate-identity",
        summary: "read through Identity ops",
        exact: true,
        options: &[],
        build: |_| Ok(Box::new(eliminate_identity::EliminateIdentity)),
    },
    PassInfo {
        name: "fold-constants",
        summary: "evaluate ops whose inputs are all known at compile time, shape arithmetic included",
        exact: true,
        options: &[OptionInfo {
            name: "max-elements",
            default: "1048576",
            help: "largest result (in elements) that is folded into a constant",
        }],
        build: |options| Ok(Box::new(fold_constants::FoldConstants::new(options)?)),
    },
    PassInfo {
        name: "calibrate",
        summary: "run the float model on the calibration samples and record statistics of every float value",
        exact: true,
        options: &[],
        build: |_| Ok(Box::new(calibrate::Calibrate)),
    },
    PassInfo {
        name: "quantize",
        summary: "choose bits, sign and scale of every calibrated value (the plan lowering follows)",
        exact: true,
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
        name: "lower-linear-to-integer",
        summary: "MatMul/Gemm/Conv to MatMulInteger/ConvInteger with int8 weights, residuals and data movement in integers",
        exact: false,
        options: &[OptionInfo {
            name: "rounding",
            default: "half-up",
            help: "rounding of requantizations: half-up or floor",
        }],
        build: |options| {
            Ok(Box::new(lower_linear_to_integer::LowerLinear::new(
                options,
            )?))
        },
    },
    PassInfo {
        name: "fold-dyadic-requant",
        summary: "fold biases into requantization offsets; merge requantization chains and requant→dequantize pairs",
        exact: false,
        options: &[],
        build: |_| Ok(Box::new(fold_dyadic_requant::FoldDyadicRequant)),
    },
    PassInfo {
        name: "legalize",
        summary: "expand intone's internal ops into standard ONNX for a target, then prove no integer op can overflow",
        exact: true,
        options: &[OptionInfo {
            name: "target",
            default: "integer",
            help: "integer (Div-based shifts, opset ≥ 15) or integer-opset28 (signed BitShift)",
        }],
        build: |options| Ok(Box::new(legalize::Legalize::new(options)?)),
    },
    PassInfo {
        name: "upgrade-opset",
        summary: "rewrite every op to its form at a newer opset (attributes that became inputs, Softmax axes)",
        exact: true,
        options: &[OptionInfo {
            name: "to",
            default: "18",
            help: "the opset to import (13..=21); models already at or above it are left alone",
        }],
        build: |options| Ok(Box::new(upgrade_opset::UpgradeOpset::new(options)?)),
    },
];

/// Named pipelines. Each line says why its passes sit where they do.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "none",
        summary: "no passes: an exact round trip of the input",
        passes: "",
    },
    Preset {
        name: "canonicalize",
        summary: "one opset (18+) for every op, then cleanup: the form every later pass expects",
        // Upgrading first means folding and the later passes see one version of each op.
        passes: "upgrade-opset(to=18),eliminate-identity,fold-constants,eliminate-dead-nodes",
    },
    Preset {
        name: "linear",
        summary: "integer linear layers: canonicalize, calibrate, quantize, lower MatMul/Gemm/Conv, legalize",
        // Calibration observes the canonical float model; lowering follows the quantize plan;
        // legalize expands requantizations and proves ranges; the final folding turns
        // quantizations of constants (class tokens) into integer constants.
        passes: "upgrade-opset(to=18),eliminate-identity,fold-constants,eliminate-dead-nodes,\
                 calibrate,quantize,lower-linear-to-integer,fold-dyadic-requant,legalize(target=integer),fold-constants,eliminate-dead-nodes",
    },
    Preset {
        name: "cleanup",
        summary: "canonical cleanup: drop Identity, fold constants and shape arithmetic, drop dead nodes",
        // Identity first so folding sees through it; dead-node removal last collects what
        // folding left behind.
        passes: "eliminate-identity,fold-constants,eliminate-dead-nodes",
    },
];
