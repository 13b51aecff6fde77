//! `split-residual-groups(bits,order,sparsity,ensemble)`: plans every constant weight of a
//! Conv, MatMul or Gemm as a residual expansion (`lower::residual`, REx/PIPE): `order` terms of
//! `bits` bits each, aligned exactly in int32 (ratio `2m + 1`), the terms ≥ 2 only on the
//! `1 − sparsity` fraction of output channels with the largest residual. With `ensemble=M` it
//! instead copies every op into M branches, each with single-term weights that add up to the
//! weight on a grid M times finer (`residual::ensemble_branch`), and averages the outputs a
//! weight reaches with a `Mean`. Options not written come from the compile flags
//! (`--weight-bits`, `--residual-order`, `--residual-sparsity`, `--ensemble`).
//!
//! A weight gets fewer terms than asked where their int32 sum could overflow — the interval
//! arithmetic the range proof repeats on the graph, over the whole interval its activation's
//! plan allows — and the report says so. Depthwise Convs (int32 tap sums) take the aligned
//! terms as one int32 weight. Every weight's report gives the bound of its error, the realized
//! error and its cost in b-bit matmuls. Without an ensemble it changes weight plans only, so
//! the defaults (one 8-bit term) leave the compiled model byte for byte as it was.

use super::prelude::*;

use crate::Error;
use crate::ir::quant::{Granularity, WeightPlan};
use crate::lower::residual::{
    self, ActivationTerms, Expansion, accumulator_range, channels_by_residual, expand_weight,
};
use crate::pass::WeightReport;
use crate::quant::{BudgetBy, WeightExpansion};
use crate::runner::sensitivity::{DEFAULT_SAMPLES, Perturbation, Probe, output_noise};
use std::collections::HashMap;

pub struct SplitResidualGroups {
    bits: Option<u32>,
    order: Option<u32>,
    sparsity: Option<f64>,
    ensemble: Option<u32>,
    budget: Option<f64>,
    budget_by: Option<BudgetBy>,
}

impl SplitResidualGroups {
    pub fn new(options: &PassOptions) -> Result<SplitResidualGroups> {
        fn given<T: std::str::FromStr>(options: &PassOptions, key: &str) -> Result<Option<T>> {
            match options.get::<String>(key)?.as_str() {
                "" => Ok(None),
                _ => options.get::<T>(key).map(Some),
            }
        }
        let pass = SplitResidualGroups {
            bits: given(options, "bits")?,
            order: given(options, "order")?,
            sparsity: given(options, "sparsity")?,
            ensemble: given(options, "ensemble")?,
            budget: given(options, "budget")?,
            budget_by: given(options, "budget-by")?,
        };
        pass.settings(&WeightExpansion::default())?;
        Ok(pass)
    }

    /// The options, the compile flags where not written; checked.
    fn settings(&self, flags: &WeightExpansion) -> Result<WeightExpansion> {
        let s = WeightExpansion {
            bits: self.bits.unwrap_or(flags.bits),
            order: self.order.unwrap_or(flags.order),
            sparsity: self.sparsity.unwrap_or(flags.sparsity),
            ensemble: self.ensemble.unwrap_or(flags.ensemble),
            budget: self.budget.or(flags.budget),
            budget_by: self.budget_by.unwrap_or(flags.budget_by),
        };
        s.check().map_err(Error::Usage)?;
        Ok(s)
    }
}

impl Pass for SplitResidualGroups {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let settings = self.settings(&cx.options.weight_expansion)?;
        let branches = settings.ensemble as usize;
        let mut branch_of = HashMap::new();
        if branches > 1 {
            let facts = cx.facts(model)?;
            branch_of = split_into_branches(model, branches, &facts)?;
        }
        let facts = cx.facts(model)?;
        let mut planned = Vec::new();
        for id in model.graph.topological_order()? {
            let Some(mut found) = expandable(model, id)? else {
                continue;
            };
            found.branch = branch_of
                .get(&found.weight)
                .map(|&j| (j as u32, branches as u32));
            cx.report.matched += 1;
            let crate::ir::Array::F32(w) = model
                .graph
                .constant(found.weight)
                .expect("a constant weight")
                .decode()?
            else {
                continue;
            };
            let outputs: u64 = facts
                .get(ValueId { node: id, slot: 0 })
                .and_then(|f| f.shape.as_ref())
                .map_or(1, |s| {
                    s.iter().map(|d| d.known().unwrap_or(1) as u64).product()
                });
            let macs = outputs * (w.len() / w.shape()[found.axis].max(1)) as u64;
            planned.push((id, found, w, macs));
        }
        let mut measured = vec![None; planned.len()];
        if let (Some(budget), true) = (settings.budget, settings.order > 1) {
            if let (BudgetBy::Output, Some(set)) = (settings.budget_by, &cx.options.calibration) {
                // Each layer's noise on top of the matmul inputs' own rounding, as the compiled
                // model will have it.
                let context = matmul_inputs_on_their_grids(model);
                let probe = Probe {
                    set,
                    samples: DEFAULT_SAMPLES,
                    objective: &cx.options.objective,
                    context: &context,
                };
                measured = measure_output_noise(model, probe, &planned, &settings)?;
                cx.remark(
                    "<residual budget>",
                    format!(
                        "output noise of {} layers measured one at a time on {} calibration samples",
                        measured.iter().flatten().count(),
                        set.samples()?.min(DEFAULT_SAMPLES)
                    ),
                );
            }
            spend_budget(model, &mut planned, &settings, budget, &measured);
        }
        for ((id, found, w, macs), output_noise) in planned.into_iter().zip(measured) {
            let (plan, report) = plan_expansion(&w, &found, &settings);
            if plan.magnitude != found.plan.magnitude
                || plan.terms != 1
                || plan.residual_channels.is_some()
                || plan.ensemble_branch.is_some()
            {
                cx.report.rewritten += 1;
            }
            cx.report.weights.push(WeightReport {
                weight: model.graph.value_name(found.weight).to_string(),
                node: model.graph.describe(id),
                parameters: w.len(),
                macs,
                output_noise,
                ..report
            });
            model.graph.value_mut(found.weight).weight_plan = Some(plan);
        }
        Ok(())
    }
}

/// A planned weight of an integer matmul, as this pass reads it.
struct Found {
    weight: ValueId,
    axis: usize,
    plan: WeightPlan,
    /// The integer terms its activation enters the matmul as, over the whole planned interval;
    /// `None` for a depthwise Conv (int32 taps of the activation at its plan).
    activation: Option<Vec<(i64, (i64, i64))>>,
    /// A depthwise Conv's activation magnitude and its taps.
    depthwise: Option<(i64, usize)>,
    /// Branch j of M of an ensemble.
    branch: Option<(u32, u32)>,
    /// The channels the model-wide budget gave terms ≥ 2 (instead of the layer's sparsity).
    budgeted: Option<Vec<usize>>,
    /// A grouped Conv computed as ConvInteger: its residual terms keep every channel (a subset
    /// of output channels would not line up with the groups).
    grouped: bool,
}

/// The weight of node `id` when `quantize` planned it per channel and its activation has a plan.
fn expandable(model: &Model, id: NodeId) -> Result<Option<Found>> {
    let g = &model.graph;
    let Some(op) = g.op(id) else { return Ok(None) };
    if !op.domain().is_empty() || !matches!(op.op_type(), "Conv" | "MatMul" | "Gemm") {
        return Ok(None);
    }
    let (Some(x), Some(w)) = (g.input(id, 0), g.input(id, 1)) else {
        return Ok(None);
    };
    let Some(plan) = g.value(w).weight_plan.clone() else {
        return Ok(None);
    };
    let Granularity::PerChannel { axis } = plan.granularity else {
        return Ok(None);
    };
    let Some(a) = g.value(x).plan.clone() else {
        return Ok(None);
    };
    let dims = g
        .constant(w)
        .expect("planned weights are constants")
        .dims()
        .to_vec();
    if g.constant(w).and_then(|t| t.dtype().ok()) != Some(crate::ir::DataType::Float) {
        return Ok(None);
    }
    if let Some(taps) = crate::ops::taps::DepthwiseTaps::of(op, &dims)? {
        let kernel = (taps.window.kernel[0] * taps.window.kernel[1]) as usize;
        return Ok(Some(Found {
            weight: w,
            axis,
            plan,
            activation: None,
            depthwise: Some((a.levels(), kernel)),
            branch: None,
            budgeted: None,
            grouped: false,
        }));
    }
    // The operand ranges `lower-linear-to-integer` can emit for this plan (after zero points):
    // 8 bits, or a 16-bit value as `256·hi + lo`.
    let byte = if a.signed { (-128, 127) } else { (0, 255) };
    let activation = if plan.activation_terms == 2 && (9..=16).contains(&a.bits) {
        vec![(256, byte), (1, (0, 255))]
    } else {
        vec![(1, byte)]
    };
    Ok(Some(Found {
        weight: w,
        axis,
        plan,
        activation: Some(activation),
        depthwise: None,
        branch: None,
        budgeted: None,
        grouped: op.is("Conv") && op.attr_int("group", 1)? > 1,
    }))
}

/// The plan of one weight under `settings`, and its report (weight and node names left empty).
fn plan_expansion(
    w: &ndarray::ArrayD<f32>,
    found: &Found,
    settings: &WeightExpansion,
) -> (WeightPlan, WeightReport) {
    let magnitude = residual::magnitude_of_bits(settings.bits, found.plan.magnitude);
    let channels = w.shape()[found.axis];
    if let Some((branch, branches)) = found.branch {
        let error = residual::ensemble_error(w, found.axis, magnitude, branches as usize);
        let plan = WeightPlan {
            magnitude,
            terms: 1,
            residual_channels: None,
            ensemble_branch: Some((branch, branches)),
            ..found.plan.clone()
        };
        let report = WeightReport {
            bits: settings.bits,
            magnitude,
            terms: 1,
            channels,
            cost: 1.0,
            bound: error.bound,
            max_error: error.max_abs,
            relative_error: error.relative_l2,
            ensemble_branch: Some((branch, branches)),
            why: format!(
                "branch {branch} of {branches}: bound and error of the branches' mean weight"
            ),
            ..Default::default()
        };
        return (plan, report);
    }
    let kept_count = ((1.0 - settings.sparsity) * channels as f64).round() as usize;
    let mut why = Vec::new();
    let mut order = settings.order as usize;
    if order > 1 && kept_count == 0 && found.budgeted.is_none() && !found.grouped {
        why.push(format!(
            "sparsity {} leaves no channel its residual terms",
            settings.sparsity
        ));
        order = 1;
    }
    let kept = match &found.budgeted {
        _ if found.grouped => {
            if order > 1 && kept_count < channels {
                why.push("grouped Conv: residual terms on every channel".into());
            }
            None
        }
        Some(kept) if kept.is_empty() => {
            order = 1;
            why.push("the residual budget gave this layer no channel".into());
            None
        }
        Some(kept) => {
            why.push(format!(
                "the residual budget gave {} of {channels} channels terms ≥ 2",
                kept.len()
            ));
            (kept.len() < channels).then(|| kept.clone())
        }
        None => (order > 1 && kept_count < channels)
            .then(|| channels_by_residual(w, found.axis, magnitude, kept_count)),
    };
    let mut expansion = expand_weight(w, found.axis, magnitude, order, kept.as_deref());
    while expansion.order() > 1 && !fits(&expansion, found) {
        expansion = expansion.truncated(expansion.order() - 1);
    }
    if expansion.order() < order {
        why.push(format!(
            "{} of {order} terms: more could overflow the int32 accumulator",
            expansion.order()
        ));
    }
    if found.depthwise.is_some() && expansion.order() > 1 {
        why.push("depthwise: the aligned terms are one int32 tap weight".into());
    }
    let error = residual::expansion_error(w, &expansion);
    let residual_channels = if expansion.order() > 1 {
        expansion.kept_channels().len()
    } else {
        0
    };
    let plan = WeightPlan {
        magnitude,
        terms: expansion.order() as u32,
        residual_channels: kept.filter(|_| expansion.order() > 1),
        ..found.plan.clone()
    };
    let report = WeightReport {
        bits: settings.bits,
        magnitude,
        terms: expansion.order() as u32,
        channels,
        residual_channels,
        cost: expansion.cost(),
        bound: error.bound,
        max_error: error.max_abs,
        relative_error: error.relative_l2,
        why: why.join("; "),
        ..Default::default()
    };
    (plan, report)
}

/// True when every int32 intermediate of the lowered expansion stays in range.
fn fits(e: &Expansion, found: &Found) -> bool {
    match (&found.activation, found.depthwise) {
        (Some(activation), _) => accumulator_range(e, activation as &ActivationTerms).is_some(),
        (None, Some((levels, _))) => residual::tap_sum_fits(e, levels),
        (None, None) => false,
    }
}

/// Makes `branches − 1` copies of every op, each reading its own copy of every planned weight,
/// and points every graph output at the `Mean` of its copies. Returns the branch of every
/// planned weight (0 for the originals). The branches share the graph inputs and everything that
/// is not an op (initializers other than the planned weights).
fn split_into_branches(
    model: &mut Model,
    branches: usize,
    facts: &crate::ops::GraphFacts,
) -> Result<HashMap<ValueId, usize>> {
    let g = &model.graph;
    let ops: Vec<NodeId> = g.node_ids().filter(|&id| g.op(id).is_some()).collect();
    let weights: Vec<ValueId> = ops
        .iter()
        .filter_map(|&id| g.input(id, 1))
        .filter(|&w| g.value(w).weight_plan.is_some() && g.constant(w).is_some())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // Outputs that a planned weight reaches differ between branches and are averaged; the
    // others (shapes, passed-through ids) are the same in every branch and stay as they are.
    let reached = reached_from(model, &weights)?;
    let g = &model.graph;
    let mut averaged = Vec::new();
    for (i, out) in g.outputs().iter().enumerate() {
        if !reached.contains(&out.value.node) {
            continue;
        }
        let dtype = facts.get(out.value).and_then(|f| f.dtype);
        if dtype != Some(crate::ir::DataType::Float) {
            return Err(Error::Usage(format!(
                "ensemble: graph output {i} '{}' is {dtype:?}; branches are combined by the Mean \
                 of float outputs",
                g.value_name(out.value)
            )));
        }
        averaged.push(i);
    }
    let mut branch_of: HashMap<ValueId, usize> = weights.iter().map(|&w| (w, 0)).collect();
    let mut copies: Vec<HashMap<ValueId, ValueId>> = Vec::new();
    let mut rw = Rewriter::unanchored(model);
    for j in 1..branches {
        let mut substitutions = HashMap::new();
        for &w in &weights {
            let g = rw.graph();
            let tensor = g.constant(w).expect("a planned weight").decode()?;
            let plan = g.value(w).weight_plan.clone();
            let anchor = rw.set_anchor(g.uses(w)[0].node);
            let copy = rw.constant(&format!("branch{j}_weight"), &tensor)?;
            rw.restore_anchor(anchor);
            rw.annotate(copy, |v| v.weight_plan = plan);
            branch_of.insert(copy, j);
            substitutions.insert(w, copy);
        }
        copies.push(rw.clone_subgraph(&ops, &substitutions, &format!("branch{j}"))?);
    }
    for i in averaged {
        let y = rw.graph().outputs()[i].value;
        let members: Vec<Option<ValueId>> = std::iter::once(y)
            .chain(copies.iter().map(|map| map.get(&y).copied().unwrap_or(y)))
            .map(Some)
            .collect();
        let anchor = rw.set_anchor(y.node);
        let mean = rw.op_node(
            crate::ir::Op::new("Mean", ""),
            "ensemble_mean",
            &members,
            vec![],
            1,
        )?;
        rw.restore_anchor(anchor);
        let mean = ValueId {
            node: mean,
            slot: 0,
        };
        let g = rw.model_mut();
        let name = g.graph.value_name(y).to_string();
        let retired = g.graph.fresh_name(&format!("{name}/branch0"));
        g.graph.rename_value(y, &retired)?;
        g.graph.rename_value(mean, &name)?;
        g.graph.set_output_value(i, mean);
    }
    rw.finish()?;
    Ok(branch_of)
}

/// The nodes that read, directly or not, one of `values`.
fn reached_from(model: &Model, values: &[ValueId]) -> Result<std::collections::HashSet<NodeId>> {
    let g = &model.graph;
    let mut reached: std::collections::HashSet<NodeId> = std::collections::HashSet::new();
    let sources: std::collections::HashSet<ValueId> = values.iter().copied().collect();
    for id in g.topological_order()? {
        let reads = g
            .inputs_of(id)
            .into_iter()
            .flatten()
            .any(|v| sources.contains(&v) || reached.contains(&v.node));
        if reads {
            reached.insert(id);
        }
    }
    Ok(reached)
}

/// The activations of at most 8 bits that Conv/MatMul/Gemm read, rounded onto their planned
/// grid: the noise the integer matmuls' operands bring whatever the weights (wider values are
/// narrowed only for their matmul, so rounding them would reach every other reader too).
fn matmul_inputs_on_their_grids(model: &Model) -> Vec<Perturbation> {
    let g = &model.graph;
    let mut seen = std::collections::BTreeSet::new();
    let mut sites = Vec::new();
    for id in g.node_ids() {
        let Some(op) = g.op(id) else { continue };
        if !op.domain().is_empty() || !matches!(op.op_type(), "Conv" | "MatMul" | "Gemm") {
            continue;
        }
        for x in [g.input(id, 0), g.input(id, 1)].into_iter().flatten() {
            let Some(plan) = g.value(x).plan.as_ref().filter(|p| p.bits <= 8) else {
                continue;
            };
            let crate::ir::quant::Scale::PerTensor(scale) = plan.scale else {
                continue;
            };
            if g.constant(x).is_some() || !seen.insert((x.node, x.slot)) {
                continue;
            }
            sites.push(Perturbation::on_grid(x, scale, plan.levels(), plan.signed));
        }
    }
    sites
}

/// Per planned weight: the output noise (relative to its power) that weight alone at its
/// single b-bit term adds to the probe's context, measured on calibration samples; `None` for
/// weights the budget does not rank.
fn measure_output_noise(
    model: &Model,
    probe: Probe,
    planned: &[(NodeId, Found, ndarray::ArrayD<f32>, u64)],
    settings: &WeightExpansion,
) -> Result<Vec<Option<f64>>> {
    let mut sites = Vec::new();
    let mut site_of = Vec::new();
    for (_, found, w, _) in planned {
        if found.branch.is_some() || found.grouped {
            site_of.push(None);
            continue;
        }
        let magnitude = residual::magnitude_of_bits(settings.bits, found.plan.magnitude);
        let single = expand_weight(w, found.axis, magnitude, 1, None).approximation();
        site_of.push(Some(sites.len()));
        sites.push(Perturbation::Weight {
            value: found.weight,
            replacement: crate::ir::Array::F32(single.mapv(|v| v as f32)),
        });
    }
    let noise = output_noise(model, probe, &sites)?;
    Ok(site_of
        .into_iter()
        .map(|s| s.and_then(|i| noise[i]))
        .collect())
}

/// `--residual-budget F`: ranks every channel of every weight by the output noise its first
/// residual leaves per MAC of its residual terms, and gives terms ≥ 2 to the best until their
/// MACs reach F of what every channel keeping them would cost. The noise is `measured` (the
/// output noise this layer single-term adds to the matmul inputs' rounding, shared among its
/// channels in proportion to `‖W_c − λ_1·q_c‖²`) where given, else estimated at the layer's own
/// output —
/// `‖W_c − λ_1·q_c‖²·E[x²]/E[y²]` from calibration (the rounding-noise ratio
/// `--wide-operands auto` uses), else relative to the weight's own power. Ties go to the
/// earlier layer and channel.
fn spend_budget(
    model: &Model,
    planned: &mut [(NodeId, Found, ndarray::ArrayD<f32>, u64)],
    settings: &WeightExpansion,
    budget: f64,
    measured: &[Option<f64>],
) {
    let g = &model.graph;
    let mean_square = |v: Option<ValueId>| {
        v.and_then(|v| g.value(v).stats.clone())
            .filter(|s| s.count > 0)
            .map(|s| s.sum_squares / s.count as f64)
    };
    let mut candidates = Vec::new();
    let mut total = 0f64;
    for (i, (id, found, w, macs)) in planned.iter().enumerate() {
        if found.branch.is_some() || found.grouped {
            continue;
        }
        let magnitude = residual::magnitude_of_bits(settings.bits, found.plan.magnitude);
        let channels = w.shape()[found.axis];
        let per_channel = *macs as f64 / channels.max(1) as f64;
        let (x, y) = (g.input(*id, 0), Some(ValueId { node: *id, slot: 0 }));
        let weight_power = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / channels as f64;
        let norms = residual::residual_norms(w, found.axis, magnitude);
        let scale = match (measured[i], mean_square(x), mean_square(y)) {
            (Some(noise), _, _) => noise / norms.iter().sum::<f64>().max(f64::MIN_POSITIVE),
            (None, Some(ex), Some(ey)) if ey > 0.0 => ex / ey,
            _ => 1.0 / weight_power.max(f64::MIN_POSITIVE),
        };
        let all: Vec<usize> = (0..channels).collect();
        for c in all {
            candidates.push((norms[c] * scale / per_channel.max(1.0), per_channel, i, c));
        }
        total += per_channel * channels as f64;
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.2, a.3).cmp(&(b.2, b.3))));
    let mut kept: Vec<Vec<usize>> = vec![Vec::new(); planned.len()];
    let mut spent = 0f64;
    for (_, cost, i, c) in candidates {
        if spent + cost > budget * total {
            continue;
        }
        spent += cost;
        kept[i].push(c);
    }
    for ((_, found, _, _), mut k) in planned.iter_mut().zip(kept) {
        if found.branch.is_none() && !found.grouped {
            k.sort_unstable();
            found.budgeted = Some(k);
        }
    }
}
