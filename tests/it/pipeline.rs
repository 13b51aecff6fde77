//! The pipeline language and the registry.

use intone::pass::Pipeline;
use intone::passes::{PASSES, PRESETS};

fn parse(text: &str) -> Result<Pipeline, String> {
    Pipeline::parse(text, PASSES).map_err(|e| e.to_string())
}

#[test]
fn parses_passes_and_options() {
    let p = parse(" eliminate-identity , fold-constants( max-elements = 64 ),eliminate-dead-nodes")
        .unwrap();
    let names: Vec<&str> = p.passes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "eliminate-identity",
            "fold-constants",
            "eliminate-dead-nodes"
        ]
    );
    assert_eq!(p.passes[1].options.raw("max-elements"), Some("64"));
    assert_eq!(p.passes[1].span, 22..36);
    assert_eq!(
        p.to_text(),
        "eliminate-identity,fold-constants(max-elements=64),eliminate-dead-nodes"
    );
    assert!(parse("").unwrap().passes.is_empty());
}

#[test]
fn errors_point_at_the_problem() {
    let e = parse("eliminate-identity,fold-constant").unwrap_err();
    assert_eq!(
        e,
        "unknown pass 'fold-constant' at column 20; did you mean 'fold-constants'?"
    );
    let e = parse("fold-constants(max-element=3)").unwrap_err();
    assert!(
        e.contains("has no option 'max-element'; did you mean 'max-elements'?"),
        "{e}"
    );
    let e = parse("eliminate-identity(x=1)").unwrap_err();
    assert!(e.contains("takes no options"), "{e}");
    let e = parse("fold-constants(max-elements=3").unwrap_err();
    assert!(e.contains("expected ',' or ')' at column 30"), "{e}");
    let e = parse("fold-constants(max-elements=3,max-elements=4)").unwrap_err();
    assert!(e.contains("given twice"), "{e}");
    let e = parse("a,,b").unwrap_err();
    assert!(e.contains("expected a pass name at column 3"), "{e}");
    let e = parse("eliminate-identity fold-constants").unwrap_err();
    assert!(e.contains("expected ',' between passes"), "{e}");
    let e = Pipeline::preset("clean", PRESETS, PASSES)
        .unwrap_err()
        .to_string();
    assert!(e.contains("did you mean 'cleanup'?"), "{e}");
}

#[test]
fn bad_option_values_fail_when_the_pass_is_built() {
    let p = parse("fold-constants(max-elements=lots)").unwrap();
    let e = intone::pass::Manager::new(&p, PASSES)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("max-elements=lots is not a valid usize"), "{e}");
}

#[test]
fn registry_names_are_kebab_case_verbs_and_presets_parse() {
    for p in PASSES {
        assert!(
            p.name.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
            "{}",
            p.name
        );
        // Its own file, its own folder, or a file in the folder of the pass it is a job of.
        let stem = p.name.replace('-', "_");
        let passes = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("passes");
        let found = passes.join(format!("{stem}.rs")).exists()
            || passes.join(&stem).join("mod.rs").exists()
            || std::fs::read_dir(&passes).unwrap().any(|e| {
                let dir = e.unwrap().path();
                dir.is_dir() && dir.join(format!("{stem}.rs")).exists()
            });
        assert!(found, "{} has no file passes/{stem}.rs", p.name);
        assert!(!p.summary.is_empty());
    }
    for preset in PRESETS {
        Pipeline::preset(preset.name, PRESETS, PASSES).unwrap();
    }
}
