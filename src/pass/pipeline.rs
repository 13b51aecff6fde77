//! The pipeline language: `pass-a,pass-b(key=value,key=value),pass-c`, or a preset name.
//! Errors point at the offending text (column) and suggest the closest known name.

use std::collections::BTreeMap;
use std::ops::Range;

use super::Pass;
use crate::error::suggestion;
use crate::{Error, Result};

/// A pass as the registry in `passes/mod.rs` declares it.
pub struct PassInfo {
    /// Kebab-case, verb first: `fold-constants`.
    pub name: &'static str,
    pub summary: &'static str,
    /// True when the pass never changes what the model computes.
    pub exact: bool,
    /// The phases it runs on and the one it leaves.
    pub phases: super::Phases,
    pub options: &'static [OptionInfo],
    pub build: fn(&PassOptions) -> Result<Box<dyn Pass>>,
}

impl PassInfo {
    /// The pass, with its options' defaults filled in from the registry (the only place they
    /// are written).
    pub fn instantiate(&self, options: &PassOptions) -> Result<Box<dyn Pass>> {
        let mut options = options.with_defaults(self.options);
        if options.pass.is_empty() {
            options.pass = self.name.to_string();
        }
        (self.build)(&options)
    }
}

/// One option a pass accepts.
pub struct OptionInfo {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// What a stage of a pipeline does. A pipeline is canonicalize, fuse, plan, lower, legalize,
/// finalize, in that order, each stage optional; a new target or a new representation (Q/DQ,
/// residual expansion) is a new stage.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StageKind {
    Canonicalize,
    Fuse,
    Plan,
    Lower,
    Legalize,
    Finalize,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Canonicalize => "canonicalize",
            StageKind::Fuse => "fuse",
            StageKind::Plan => "plan",
            StageKind::Lower => "lower",
            StageKind::Legalize => "legalize",
            StageKind::Finalize => "finalize",
        }
    }
}

/// A named group of passes.
#[derive(Copy, Clone, Debug)]
pub struct Stage {
    pub kind: StageKind,
    /// The passes in the pass language.
    pub passes: &'static str,
}

/// A named pipeline, built from stages.
pub struct Preset {
    pub name: &'static str,
    pub summary: &'static str,
    pub stages: &'static [Stage],
}

impl Preset {
    /// The pipeline in the pass language.
    pub fn passes(&self) -> String {
        let parts: Vec<&str> = self.stages.iter().map(|s| s.passes).collect();
        parts.join(",")
    }

    /// `canonicalize: …; plan: …`, for `intone passes`.
    pub fn describe_stages(&self) -> String {
        let parts: Vec<String> = self
            .stages
            .iter()
            .map(|s| format!("{}: {}", s.kind.name(), s.passes))
            .collect();
        parts.join("; ")
    }
}

/// One pass of a parsed pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct PassSpec {
    pub name: String,
    pub options: PassOptions,
    /// Where the name stands in the source text.
    pub span: Range<usize>,
}

/// `key=value` options of one pass, checked against its [`OptionInfo`]s.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassOptions {
    pass: String,
    values: BTreeMap<String, String>,
}

impl PassOptions {
    pub fn new(pass: &str) -> PassOptions {
        PassOptions {
            pass: pass.to_string(),
            values: BTreeMap::new(),
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> PassOptions {
        self.values.insert(key.to_string(), value.to_string());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn raw(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// These options with every absent one set to its registry default.
    pub fn with_defaults(&self, infos: &[OptionInfo]) -> PassOptions {
        let mut options = self.clone();
        for info in infos {
            options
                .values
                .entry(info.name.to_string())
                .or_insert_with(|| info.default.to_string());
        }
        options
    }

    /// An option parsed as `T` (the registry default when it was not written; see
    /// [`PassInfo::instantiate`]).
    pub fn get<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        match self.values.get(key) {
            None => Err(Error::Usage(format!(
                "pass {}: option {key} has no value and no default",
                self.pass
            ))),
            Some(v) => v.parse().map_err(|_| {
                Error::Usage(format!(
                    "pass {}: option {key}={v} is not a valid {}",
                    self.pass,
                    std::any::type_name::<T>()
                ))
            }),
        }
    }

    /// Text of the options as written back in the pass language: `(a=1,b=2)` or empty.
    pub fn to_text(&self) -> String {
        if self.values.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .values
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("({})", parts.join(","))
    }
}

/// A parsed, validated list of passes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pipeline {
    pub passes: Vec<PassSpec>,
}

impl Pipeline {
    /// Parses the pass language and checks names and options against `registry`.
    pub fn parse(text: &str, registry: &[PassInfo]) -> Result<Pipeline> {
        let passes = Parser { text, pos: 0 }.parse_list()?;
        for spec in &passes {
            let info = lookup(registry, &spec.name).ok_or_else(|| {
                let names: Vec<&str> = registry.iter().map(|p| p.name).collect();
                Error::Usage(format!(
                    "unknown pass '{}' at column {}{}",
                    spec.name,
                    spec.span.start + 1,
                    suggestion(&spec.name, &names)
                ))
            })?;
            for key in spec.options.values.keys() {
                if !info.options.iter().any(|o| o.name == key) {
                    let names: Vec<&str> = info.options.iter().map(|o| o.name).collect();
                    let takes = if names.is_empty() {
                        " (it takes no options)".to_string()
                    } else {
                        suggestion(key, &names)
                    };
                    return Err(Error::Usage(format!(
                        "pass {} has no option '{key}'{takes}",
                        spec.name
                    )));
                }
            }
        }
        Ok(Pipeline { passes })
    }

    /// A preset by name (`none` is the empty pipeline).
    pub fn preset(name: &str, presets: &[Preset], registry: &[PassInfo]) -> Result<Pipeline> {
        let preset = presets.iter().find(|p| p.name == name).ok_or_else(|| {
            let names: Vec<&str> = presets.iter().map(|p| p.name).collect();
            Error::Usage(format!(
                "unknown pipeline '{name}'{}",
                suggestion(name, &names)
            ))
        })?;
        Pipeline::parse(&preset.passes(), registry)
    }

    /// The pipeline in the pass language.
    pub fn to_text(&self) -> String {
        let parts: Vec<String> = self
            .passes
            .iter()
            .map(|p| format!("{}{}", p.name, p.options.to_text()))
            .collect();
        parts.join(",")
    }
}

pub fn lookup<'r>(registry: &'r [PassInfo], name: &str) -> Option<&'r PassInfo> {
    registry.iter().find(|p| p.name == name)
}

struct Parser<'t> {
    text: &'t str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, at: usize, what: &str) -> Error {
        Error::Usage(format!(
            "pass list '{}': {what} at column {}",
            self.text,
            at + 1
        ))
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn word(&mut self, allowed: impl Fn(char) -> bool) -> Range<usize> {
        self.skip_space();
        let start = self.pos;
        while self.peek().is_some_and(&allowed) {
            self.pos += self.peek().map_or(0, char::len_utf8);
        }
        start..self.pos
    }

    fn parse_list(&mut self) -> Result<Vec<PassSpec>> {
        let mut passes = Vec::new();
        self.skip_space();
        if self.pos == self.text.len() {
            return Ok(passes);
        }
        loop {
            let span = self.word(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if span.is_empty() {
                return Err(self.error(self.pos, "expected a pass name"));
            }
            let name = self.text[span.clone()].to_string();
            let mut options = PassOptions::new(&name);
            self.skip_space();
            if self.peek() == Some('(') {
                self.pos += 1;
                loop {
                    let key = self.word(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                    if key.is_empty() {
                        return Err(self.error(self.pos, "expected an option name"));
                    }
                    self.skip_space();
                    if self.peek() != Some('=') {
                        return Err(self.error(self.pos, "expected '=' after the option name"));
                    }
                    self.pos += 1;
                    let value = self.word(|c| !matches!(c, ',' | ')' | '(') && !c.is_whitespace());
                    if value.is_empty() {
                        return Err(self.error(self.pos, "expected an option value"));
                    }
                    let key_text = self.text[key.clone()].to_string();
                    if options.values.contains_key(&key_text) {
                        return Err(
                            self.error(key.start, &format!("option '{key_text}' given twice"))
                        );
                    }
                    options
                        .values
                        .insert(key_text, self.text[value].to_string());
                    self.skip_space();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(')') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return Err(self.error(self.pos, "expected ',' or ')'")),
                    }
                }
            }
            passes.push(PassSpec {
                name,
                options,
                span,
            });
            self.skip_space();
            match self.peek() {
                None => return Ok(passes),
                Some(',') => self.pos += 1,
                Some(_) => return Err(self.error(self.pos, "expected ',' between passes")),
            }
        }
    }
}
