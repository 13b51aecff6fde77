//! Phases of a compilation: what a model is between passes. Each pass declares the phases it
//! runs on and the phase it leaves; the manager checks them, so running a lowering before
//! `quantize` is a one-line error naming what is missing.

use std::fmt;

use crate::ir::{Model, NodeKind};

/// `Float → Planned → Lowered → Legal`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// A float model (calibration statistics may be attached).
    Float,
    /// Float ops carry quantization plans (`quantize` ran); no integer op yet.
    Planned,
    /// Integer ops, possibly with intone's internal ops still in the graph.
    Lowered,
    /// Standard ONNX only, ranges proven.
    Legal,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Float => "float",
            Phase::Planned => "planned",
            Phase::Lowered => "lowered",
            Phase::Legal => "legal",
        }
    }

    /// The phase a model handed to the manager is in: intone's ops mean lowered, integer
    /// (de)quantization or integer matmuls legal, quantization plans planned.
    pub fn of(model: &Model) -> Phase {
        let g = &model.graph;
        let mut phase = Phase::Float;
        for id in g.node_ids() {
            match &g.node(id).kind {
                NodeKind::Op(op) if op.domain() == crate::ops::intone::DOMAIN => {
                    return Phase::Lowered;
                }
                NodeKind::Op(op)
                    if op.domain().is_empty()
                        && matches!(
                            op.op_type(),
                            "QuantizeLinear" | "DequantizeLinear" | "MatMulInteger" | "ConvInteger"
                        ) =>
                {
                    phase = Phase::Legal;
                }
                _ => {}
            }
            if phase == Phase::Float && g.node(id).outputs.iter().any(|v| v.plan.is_some()) {
                phase = Phase::Planned;
            }
        }
        phase
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The phases a pass runs on and what it leaves.
#[derive(Copy, Clone, Debug)]
pub struct Phases {
    /// Phases the pass accepts; empty means any.
    pub runs_on: &'static [Phase],
    /// The phase afterwards; `None` keeps the input's.
    pub leaves: Option<Phase>,
    /// What to run first when the phase is wrong (for the error message).
    pub needs: &'static str,
}

impl Phases {
    /// Any phase, unchanged (cleanups, canonicalization).
    pub const ANY: Phases = Phases {
        runs_on: &[],
        leaves: None,
        needs: "",
    };

    /// Float models only (calibration, fusions that rewrite float math), unchanged.
    pub const FLOAT: Phases = Phases {
        runs_on: &[Phase::Float],
        leaves: None,
        needs: "a float model (it runs before quantize)",
    };

    pub fn accepts(&self, phase: Phase) -> bool {
        self.runs_on.is_empty() || self.runs_on.contains(&phase)
    }

    /// The phase after the pass ran on `phase`.
    pub fn after(&self, phase: Phase) -> Phase {
        self.leaves.unwrap_or(phase)
    }
}
