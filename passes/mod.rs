//! The passes, one file each, and the one registry of passes and presets.
//!
//! Every pass file opens with its rewrite in one line, its preconditions, its error bound and
//! the paper section it implements. Names are kebab-case and verb first; files use the same
//! words in snake_case.

mod eliminate_dead_nodes;
mod eliminate_identity;
mod fold_constants;
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
        name: "cleanup",
        summary: "canonical cleanup: drop Identity, fold constants and shape arithmetic, drop dead nodes",
        // Identity first so folding sees through it; dead-node removal last collects what
        // folding left behind.
        passes: "eliminate-identity,fold-constants,eliminate-dead-nodes",
    },
];
