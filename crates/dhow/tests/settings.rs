//! `dhow serve`'s settings through the real binary: every setting is a flag with its variable
//! in `--help`; a flag beats the variable, which beats the file; and a wrong value stops the
//! node before it opens its data dir, naming the flag, the variable or the file's key. The
//! node is made to refuse to start (a public address without authentication, a wrong value),
//! so that what it would have served is read from the refusal.

use std::path::Path;
use std::process::{Command, Output};

use dhow_server::config::SETTINGS;
use dhow_tests::process::dhow_bin;

/// `dhow serve ARGS` with no `DHOW_*` variable of the caller's but `env`.
fn serve(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(dhow_bin());
    c.arg("serve").arg("--data-dir").arg(data).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("DHOW_") {
            c.env_remove(k);
        }
    }
    c.envs(env.iter().copied()).output().unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The address a refused node would have served (it names it in its refusal).
fn refused_address(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{}", err(o));
    let e = err(o);
    let rest = e
        .split("refusing to serve ")
        .nth(1)
        .unwrap_or_else(|| panic!("not the refusal of a public address: {e}"));
    rest.split_whitespace().next().unwrap().to_string()
}

#[test]
fn help_lists_every_setting_with_its_variable() {
    let o = Command::new(dhow_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for s in SETTINGS {
        let flag = format!("--{}", s.name.replace('_', "-"));
        let line = help
            .lines()
            .position(|l| {
                l.trim_start().starts_with(&format!("{flag} "))
                    || l.trim_start().starts_with(&format!("{flag}["))
            })
            .unwrap_or_else(|| panic!("{flag} is not in `dhow serve --help`:\n{help}"));
        let text: String = help.lines().skip(line + 1).take(1).collect();
        assert!(
            text.contains(&format!("[env: DHOW_{}=", s.name.to_uppercase())),
            "{flag}: {text}"
        );
    }
}

#[test]
fn a_flag_beats_the_variable_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("dhow.toml");
    std::fs::write(&file, "grpc_addr = \"0.0.0.0:1\"\n").unwrap();
    let file = file.to_str().unwrap();
    let o = serve(&data, &["--config", file], &[]);
    assert_eq!(refused_address(&o), "0.0.0.0:1");
    let env = [("DHOW_GRPC_ADDR", "0.0.0.0:2")];
    let o = serve(&data, &["--config", file], &env);
    assert_eq!(refused_address(&o), "0.0.0.0:2");
    let o = serve(&data, &["--config", file, "--grpc-addr", "0.0.0.0:3"], &env);
    assert_eq!(refused_address(&o), "0.0.0.0:3");
    // The config file from its variable, too.
    let o = serve(&data, &[], &[("DHOW_CONFIG", file)]);
    assert_eq!(refused_address(&o), "0.0.0.0:1");
    // The refusal comes before the data dir is made.
    assert!(!data.exists());
}

#[test]
fn a_wrong_value_names_its_flag_variable_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = serve(&data, &["--request-timeout", "5 fortnights"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("--request-timeout") && err(&o).contains("5 fortnights"),
        "{}",
        err(&o)
    );
    let o = serve(&data, &[], &[("DHOW_CHECK_CACHE_BYTES", "lots")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("environment variable DHOW_CHECK_CACHE_BYTES")
            && err(&o).contains("`lots`"),
        "{}",
        err(&o)
    );
    let file = dir.path().join("dhow.toml");
    std::fs::write(
        &file,
        "keepalive_interval = \"1.5s\"\nidle_timeout = \"1s\"\n",
    )
    .unwrap();
    let o = serve(&data, &["--config", file.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1));
    // 1.5s is a duration (the file's); the check that follows names the key.
    assert!(
        err(&o).contains("idle_timeout") && err(&o).contains("1s 500ms"),
        "{}",
        err(&o)
    );
    std::fs::write(&file, "grpc_adr = \"127.0.0.1:1\"\n").unwrap();
    let o = serve(&data, &["--config", file.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("unknown key `grpc_adr`"), "{}", err(&o));
    assert!(!data.exists());
}
