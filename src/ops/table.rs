//! The op table: per op type, what every pass that asks needs to know about it — whether it
//! only moves data (and how a per-channel axis survives it), which element types the integer
//! targets compute it in exactly, and how an interval of its integer input maps to its output.
//! Adding an op to data movement is one row here.
//!
//! Ops whose output has the type and shape of their first input are inferred from their row
//! here; the others have their arm in [`super::infer`], and evaluation is in [`super::eval`].

use crate::ir::{DataType, Op};

/// How an op's output elements relate to its input's.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Movement {
    /// Computes new values.
    Computes,
    /// Every output element is an element of input 0 (reordered, reshaped, selected by index,
    /// repeated): integers, their scale and their interval pass through.
    Elements,
    /// As [`Movement::Elements`], plus padding values (input 2, zero when absent).
    Padded,
    /// Picks input-0 elements by comparing them (max pooling, max/min reductions): commutes
    /// with an increasing affine map, so it runs on the integers of a per-tensor value.
    Selects,
}

/// How a per-channel quantization axis of input 0 survives the op.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum ChannelAxis {
    /// It does not (the value must be per tensor).
    Lost,
    /// A Reshape that keeps the last axis (the channels) keeps it, as the new last axis.
    LastKeptByReshape,
    /// A Gather of one index along another axis keeps it (one lower when the gathered axis
    /// came first).
    GatherOtherAxis,
}

/// How the interval of the output's integers follows from the inputs'.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum IntervalRule {
    /// The interval of input 0.
    OfInput,
    /// The hull of input 0's and the padding value's (input 2, zero when absent).
    WithPadding,
    /// The hull of every input's.
    HullOfInputs,
    /// The hull of inputs 1 and 2 (Where).
    HullOfBranches,
    /// Integer arithmetic, computed case by case in `lower::range`.
    Arithmetic,
    /// Not known.
    Unknown,
}

/// How the output's element type and shape follow from the inputs'.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum ShapeRule {
    /// Those of input 0 (elementwise unary ops, Identity, Softmax, …).
    OfInput,
    /// Op-specific, in `ops::infer`.
    Own,
}

/// Element types an integer target computes exactly, in tract and in onnxruntime.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum IntegerTypes {
    /// Every integer type.
    All,
    /// Only these.
    Only(&'static [DataType]),
    /// No integer kernel.
    None,
}

impl IntegerTypes {
    pub fn accepts(self, t: DataType) -> bool {
        match self {
            IntegerTypes::All => true,
            IntegerTypes::Only(types) => types.contains(&t),
            IntegerTypes::None => false,
        }
    }
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct OpInfo {
    pub op_type: &'static str,
    pub movement: Movement,
    pub channel: ChannelAxis,
    pub interval: IntervalRule,
    /// For the integer ONNX targets (`op-semantics.md` §1: accepted and exact in both engines).
    pub integer: IntegerTypes,
    pub shape: ShapeRule,
}

const I8_U8: &[DataType] = &[DataType::Int8, DataType::Uint8];
const REDUCE_MAX: &[DataType] = &[
    DataType::Int8,
    DataType::Uint8,
    DataType::Int32,
    DataType::Int64,
];
const CLIP: &[DataType] = &[
    DataType::Int8,
    DataType::Uint8,
    DataType::Int32,
    DataType::Int64,
    DataType::Uint32,
    DataType::Uint64,
];
const I32_I64: &[DataType] = &[DataType::Int32, DataType::Int64];
const RELU: &[DataType] = &[DataType::Int8, DataType::Int32];
const WHERE: &[DataType] = &[
    DataType::Int8,
    DataType::Uint8,
    DataType::Int32,
    DataType::Uint32,
    DataType::Int64,
];

const fn row(
    op_type: &'static str,
    movement: Movement,
    channel: ChannelAxis,
    interval: IntervalRule,
    integer: IntegerTypes,
) -> OpInfo {
    OpInfo {
        op_type,
        movement,
        channel,
        interval,
        integer,
        shape: ShapeRule::Own,
    }
}

/// Same type and shape as input 0, integer arithmetic in `lower::range`.
const fn elementwise(op_type: &'static str, integer: IntegerTypes) -> OpInfo {
    OpInfo {
        shape: ShapeRule::OfInput,
        ..computes(op_type, integer)
    }
}

/// Same type and shape as input 0, float only.
const fn float_elementwise(op_type: &'static str) -> OpInfo {
    OpInfo {
        interval: IntervalRule::Unknown,
        ..elementwise(op_type, IntegerTypes::None)
    }
}

const fn moves(op_type: &'static str) -> OpInfo {
    row(
        op_type,
        Movement::Elements,
        ChannelAxis::Lost,
        IntervalRule::OfInput,
        IntegerTypes::All,
    )
}

const fn computes(op_type: &'static str, integer: IntegerTypes) -> OpInfo {
    row(
        op_type,
        Movement::Computes,
        ChannelAxis::Lost,
        IntervalRule::Arithmetic,
        integer,
    )
}

use ChannelAxis as C;
use IntegerTypes as T;
use IntervalRule as R;
use Movement as M;

/// The default domain's ops intone knows these properties of.
pub const TABLE: &[OpInfo] = &[
    // Data movement.
    OpInfo {
        shape: ShapeRule::OfInput,
        ..moves("Identity")
    },
    row(
        "Reshape",
        M::Elements,
        C::LastKeptByReshape,
        R::OfInput,
        T::All,
    ),
    moves("Transpose"),
    moves("Squeeze"),
    moves("Unsqueeze"),
    moves("Flatten"),
    moves("Slice"),
    moves("Expand"),
    moves("Tile"),
    moves("Split"),
    row(
        "Gather",
        M::Elements,
        C::GatherOtherAxis,
        R::OfInput,
        T::All,
    ),
    moves("GatherElements"),
    moves("SpaceToDepth"),
    moves("DepthToSpace"),
    row("Pad", M::Padded, C::Lost, R::WithPadding, T::All),
    row("MaxPool", M::Selects, C::Lost, R::OfInput, T::Only(I8_U8)),
    row(
        "ReduceMax",
        M::Selects,
        C::Lost,
        R::OfInput,
        T::Only(REDUCE_MAX),
    ),
    row(
        "ReduceMin",
        M::Selects,
        C::Lost,
        R::OfInput,
        T::Only(REDUCE_MAX),
    ),
    row("Concat", M::Computes, C::Lost, R::HullOfInputs, T::All),
    row(
        "Where",
        M::Computes,
        C::Lost,
        R::HullOfBranches,
        T::Only(WHERE),
    ),
    // Integer arithmetic.
    computes("Add", T::All),
    computes("Sub", T::All),
    computes("Mul", T::All),
    computes("Sum", T::All),
    computes("Div", T::All),
    elementwise("Neg", T::All),
    elementwise("Abs", T::All),
    elementwise("Clip", T::Only(CLIP)),
    computes("Max", T::Only(CLIP)),
    computes("Min", T::Only(CLIP)),
    elementwise("Relu", T::Only(RELU)),
    computes("Cast", T::All),
    computes("CastLike", T::All),
    computes("MatMulInteger", T::Only(I8_U8)),
    computes("ConvInteger", T::Only(I8_U8)),
    computes("ReduceSum", T::Only(I32_I64)),
    computes("BitShift", T::All),
    elementwise("Sign", T::All),
    // Float math.
    float_elementwise("Sqrt"),
    float_elementwise("Reciprocal"),
    float_elementwise("Exp"),
    float_elementwise("Log"),
    float_elementwise("Floor"),
    float_elementwise("Ceil"),
    float_elementwise("Round"),
    float_elementwise("Erf"),
    float_elementwise("Tanh"),
    float_elementwise("Sigmoid"),
    float_elementwise("Sin"),
    float_elementwise("Cos"),
    float_elementwise("Softmax"),
    float_elementwise("LogSoftmax"),
    float_elementwise("Gelu"),
    float_elementwise("LeakyRelu"),
    float_elementwise("Elu"),
    float_elementwise("HardSigmoid"),
    float_elementwise("Softplus"),
    float_elementwise("CumSum"),
    float_elementwise("Trilu"),
    float_elementwise("Not"),
    float_elementwise("Celu"),
    float_elementwise("Selu"),
    float_elementwise("HardSwish"),
    float_elementwise("Mish"),
    float_elementwise("Softsign"),
];

/// The row of a default-domain op type.
pub fn info(op_type: &str) -> Option<&'static OpInfo> {
    TABLE.iter().find(|r| r.op_type == op_type)
}

/// The row of `op`, when it is a default-domain op the table knows.
pub fn of(op: &Op) -> Option<&'static OpInfo> {
    if op.domain().is_empty() {
        info(op.op_type())
    } else {
        None
    }
}

/// Whether `op` only moves or selects elements of its first input (data movement).
pub fn moves_data(op: &Op) -> bool {
    of(op).is_some_and(|r| r.movement != Movement::Computes)
}

/// Every data-movement op type (for pattern roots).
pub fn data_movement() -> impl Iterator<Item = &'static str> {
    TABLE
        .iter()
        .filter(|r| r.movement != Movement::Computes)
        .map(|r| r.op_type)
}
