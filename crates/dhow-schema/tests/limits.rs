//! Schema size: compiling takes time linear in the schema (a chain of 12,000 definitions
//! through subject sets took about 20 s before; each subject set re-searched the whole chain
//! for wildcards), and the limits of [`CompileLimits`] refuse larger schemas with an error
//! that names the limit and points at the first thing past it.

use std::time::{Duration, Instant};

use dhow_schema::{compile, compile_with, CompileLimits, ErrorKind};

/// `definition ttN { relation rrr: ttN-1#rrr }`, `n` of them.
fn chain(n: usize) -> String {
    let mut s = String::from("definition tt0 { relation rrr: tt0 }\n");
    for i in 1..n {
        s.push_str(&format!(
            "definition tt{i} {{ relation rrr: tt{}#rrr }}\n",
            i - 1
        ));
    }
    s
}

#[test]
fn a_long_chain_of_definitions_compiles_in_linear_time() {
    let limits = CompileLimits {
        max_definitions: 20_000,
        ..CompileLimits::default()
    };
    let mut times = Vec::new();
    for n in [1_000, 2_000, 4_000, 8_000, 12_000] {
        let text = chain(n);
        let started = Instant::now();
        let schema = compile_with(&text, &limits).expect("compiles");
        let took = started.elapsed();
        assert_eq!(schema.definitions.len(), n);
        eprintln!("{n} definitions: {took:?}");
        times.push(took);
    }
    // Generous: a debug build takes well under a second for 12,000 (release took 20 s before).
    assert!(times[4] < Duration::from_secs(5), "{:?}", times[4]);
}

fn too_large(text: &str, limits: &CompileLimits) -> (usize, usize, String) {
    let e = compile_with(text, limits).expect_err("past a limit");
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    assert_eq!(e.diagnostics().len(), 1, "{e}");
    (e.line(), e.column(), e.message().to_string())
}

#[test]
fn each_limit_refuses_with_a_clear_error() {
    let text = "definition user {}\ndefinition doc {\n  relation viewer: user\n  relation editor: user\n  permission view = viewer + editor\n}\n";
    let fits = CompileLimits {
        max_schema_bytes: text.len(),
        max_definitions: 2,
        max_members_per_definition: 3,
        max_members: 3,
        ..CompileLimits::default()
    };
    compile_with(text, &fits).expect("exactly at every limit");

    let (line, column, msg) = too_large(
        text,
        &CompileLimits {
            max_schema_bytes: 30,
            ..fits
        },
    );
    assert_eq!((line, column), (2, 12), "{msg}");
    assert!(msg.contains("more than the limit of 30 bytes"), "{msg}");

    let (line, column, msg) = too_large(
        text,
        &CompileLimits {
            max_definitions: 1,
            ..fits
        },
    );
    assert_eq!((line, column), (2, 12), "{msg}");
    assert!(
        msg.contains("`doc`") && msg.contains("limit of 1 definitions"),
        "{msg}"
    );

    let (line, column, msg) = too_large(
        text,
        &CompileLimits {
            max_members_per_definition: 2,
            ..fits
        },
    );
    assert_eq!((line, column), (5, 14), "{msg}");
    assert!(msg.contains("limit of 2 per definition"), "{msg}");

    let (line, column, msg) = too_large(
        text,
        &CompileLimits {
            max_members: 1,
            ..fits
        },
    );
    assert_eq!((line, column), (4, 12), "{msg}");
    assert!(
        msg.contains("`doc#editor`") && msg.contains("limit of 1 relations"),
        "{msg}"
    );
}

#[test]
fn the_defaults_hold_what_real_schemas_need() {
    // 10,000 definitions compile with the defaults; one more does not.
    compile(&chain(10_000)).expect("at the limit");
    let e = compile(&chain(10_001)).expect_err("past the limit");
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert_eq!(e.line(), 10_001, "{e}");
    // A multi-byte character at the size limit: the error points at a character boundary.
    let text = format!("// {}\ndefinition user {{}}", "é".repeat(10));
    let e = compile_with(
        &text,
        &CompileLimits {
            max_schema_bytes: 4,
            ..CompileLimits::default()
        },
    )
    .expect_err("too long");
    assert_eq!((e.line(), e.column()), (1, 4), "{e}");
}

#[test]
fn a_caveat_expression_past_its_limits_is_refused_where_it_starts() {
    let text = "caveat cav(a int) {\n  a == 1 || a == 2\n}\ndefinition user {}\n";
    compile_with(text, &CompileLimits::default()).expect("fits");
    let limits = CompileLimits {
        max_caveat_expression_bytes: 10,
        ..CompileLimits::default()
    };
    let (line, column, msg) = too_large(text, &limits);
    assert_eq!((line, column), (2, 13), "{msg}");
    assert!(
        msg.contains("16 bytes, more than the limit of 10 bytes"),
        "{msg}"
    );
    let limits = CompileLimits {
        max_caveat_expression_nodes: 3,
        ..CompileLimits::default()
    };
    let err = compile_with(text, &limits).unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
}
