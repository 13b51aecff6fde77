//! Float islands between a dequantization and a quantization close into requantizations.

use super::super::prelude::*;

use crate::lower::engine::Lowering;
use crate::lower::island;

/// A quantization of a dequantized value (`Cast(Clip(Round(DequantizeLinear(q)·c)))` or
/// `QuantizeLinear`) becomes one requantization of `q`: the float island between them closes.
pub(super) fn run(model: &mut Model, cx: &mut PassContext) -> Result<()> {
    let facts = cx.facts(model)?;
    let order = model.graph.topological_order()?;
    let mut lw = Lowering::new(model, facts, cx.options);
    for id in order {
        if !lw.model().graph.contains(id) {
            continue;
        }
        let v = ValueId { node: id, slot: 0 };
        let Some(rep) = island::dequantized(&lw, v) else {
            continue;
        };
        lw.rw.set_anchor(id);
        let closed = island::requantize_readers(&mut lw, v, &rep)?;
        if closed > 0 {
            cx.report.matched += closed;
            cx.report.rewritten += closed;
            lw.rw.erase_if_dead(id);
        }
    }
    lw.finish()?;
    Ok(())
}
