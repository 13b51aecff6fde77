//! The `intone` domain: intone's internal ops, which exist between lowering and legalization and
//! never reach an output file. Each op has one file here with its definition (attributes), its
//! inference, its evaluation and its expansion into standard ONNX (as a [`requant::Expansion`]
//! recipe that `legalize` applies).

pub mod requant;

use crate::ir::Op;

/// The domain of intone's internal ops.
pub const DOMAIN: &str = crate::ir::phase::INTONE_DOMAIN;

/// Whether `op` is `intone.<op_type>`.
pub fn is(op: &Op, op_type: &str) -> bool {
    op.domain() == DOMAIN && op.op_type() == op_type
}
