//! Phases of a compilation: what a model is between passes (`pass::Phases` says which each
//! pass runs on and leaves).

use std::fmt;

use super::{Model, NodeKind};

/// The domain of intone's internal ops (`ops::intone::DOMAIN` is this).
pub const INTONE_DOMAIN: &str = "intone";

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

    /// The phase of a model: the one the last pipeline left it in, else read from the graph
    /// (a file): intone's ops mean lowered, integer matmuls legal, quantization plans planned;
    /// anything else is float (a Q/DQ export with float matmuls included: it can be
    /// calibrated and compiled).
    pub fn of(model: &Model) -> Phase {
        if let Some(phase) = model.phase {
            return phase;
        }
        let g = &model.graph;
        let mut phase = Phase::Float;
        for id in g.node_ids() {
            match &g.node(id).kind {
                NodeKind::Op(op) if op.domain() == INTONE_DOMAIN => {
                    return Phase::Lowered;
                }
                NodeKind::Op(op)
                    if op.domain().is_empty()
                        && matches!(op.op_type(), "MatMulInteger" | "ConvInteger") =>
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
