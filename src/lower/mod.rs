//! The lowering layer: how passes rewrite planned float ops into integer ones. The engine
//! (integer representations of float values, requantization emission), float islands, tables,
//! range proofs over integer graphs, the value map the compiled model records, and the compile
//! report.

pub mod driver;
pub mod engine;
pub mod island;
pub mod range;
pub mod report;
pub mod residual;
pub mod value_map;
