//! Each pass declares the phases ([`Phase`]) it runs on and the phase it leaves; the manager
//! checks them, so running a lowering before `quantize` is a one-line error naming what is
//! missing.

pub use crate::ir::Phase;

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
