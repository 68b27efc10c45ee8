//! `aos tenant|user|class|device`: what a newcomer does before the web client exists, and the
//! clear errors for duplicates, unknown references and bad input.

mod common;

use std::path::Path;

use common::{Aos, cli_ok as ok};

/// Runs `aos ARGS` in `dir`; returns (exit code, stdout, stderr).
fn aos(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let (status, out, err) = Aos::new(dir, args).output();
    (status.code().unwrap_or(-1), out, err)
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = aos(dir, args);
    assert_eq!(code, 1, "aos {args:?} should fail: {out}");
    err
}

#[test]
fn a_newcomer_sets_up_a_tenant_a_class_a_device_and_its_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    assert!(ok(d, &["tenant", "add", "acme"]).contains("tenant `acme` created"));
    ok(d, &["class", "add", "thermometer", "--tenant", "acme"]);
    ok(
        d,
        &[
            "device",
            "add",
            "t-1",
            "--tenant",
            "acme",
            "--class",
            "thermometer",
        ],
    );
    let listed = ok(d, &["device", "list", "--tenant", "acme"]);
    assert!(
        listed.contains("t-1") && listed.contains("offline"),
        "{listed}"
    );

    let token = ok(d, &["device", "credentials", "t-1", "--tenant", "acme"]);
    let token = token
        .lines()
        .find_map(|l| l.strip_prefix("access token: "))
        .and_then(|l| l.split_whitespace().next())
        .expect("the token is printed once");
    assert_eq!(token.len(), 64);

    let (status, out, err) = Aos::new(
        d,
        &[
            "user",
            "add",
            "alice",
            "--tenant",
            "acme",
            "--password-stdin",
        ],
    )
    .output_with_input("correct horse battery\n");
    assert!(status.success(), "{err}");
    assert!(
        !out.contains("password:"),
        "a given password is not echoed: {out}"
    );
    let generated = ok(d, &["user", "add", "root"]);
    assert!(
        generated.contains("password: "),
        "a generated password is shown once: {generated}"
    );
    assert!(ok(d, &["user", "list", "--tenant", "acme"]).contains("alice"));
    let admins = ok(d, &["user", "list"]);
    assert!(
        admins.contains("root") && !admins.contains("alice"),
        "{admins}"
    );
    ok(d, &["user", "passwd", "alice"]);
}

#[test]
fn duplicates_unknown_references_and_bad_input_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(d, &["tenant", "add", "acme"]);
    ok(d, &["class", "add", "sensor", "--tenant", "acme"]);
    ok(
        d,
        &[
            "device", "add", "s-1", "--tenant", "acme", "--class", "sensor",
        ],
    );

    let err = fails(d, &["tenant", "add", "acme"]);
    assert!(err.contains("tenant `acme` already exists"), "{err}");
    let err = fails(
        d,
        &[
            "device", "add", "s-1", "--tenant", "acme", "--class", "sensor",
        ],
    );
    assert!(err.contains("device `s-1` already exists"), "{err}");
    let err = fails(
        d,
        &[
            "device", "add", "s-2", "--tenant", "acme", "--class", "nope",
        ],
    );
    assert!(err.contains("no device class `nope`"), "{err}");
    let err = fails(d, &["class", "list", "--tenant", "initech"]);
    assert!(err.contains("no tenant `initech`"), "{err}");
    let err = fails(
        d,
        &[
            "device", "add", "a/b", "--tenant", "acme", "--class", "sensor",
        ],
    );
    assert!(err.contains("device id may hold only letters"), "{err}");
    let long = "x".repeat(200);
    let err = fails(d, &["tenant", "add", &long]);
    assert!(
        err.contains("tenant name must be 1 to 128 characters"),
        "{err}"
    );
    let err = fails(d, &["tenant", "add", "Bad Name!"]);
    assert!(err.contains("tenant name may hold only letters"), "{err}");
    let (status, _, err) = Aos::new(
        d,
        &["user", "add", "bob", "--tenant", "acme", "--password-stdin"],
    )
    .output_with_input("short\n");
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("at least 8 characters"), "{err}");

    // Not UTF-8: refused by the argument parser, nothing written.
    use std::os::unix::ffi::OsStrExt;
    let (status, _, err) = Aos::new(d, &["tenant", "add"])
        .arg(std::ffi::OsStr::from_bytes(b"bad\xff"))
        .output();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("UTF-8"), "{err}");
    // Everything that failed left the data as it was.
    let tenants = ok(d, &["tenant", "list"]);
    assert_eq!(tenants.lines().count(), 2, "{tenants}");
    let devices = ok(d, &["device", "list", "--tenant", "acme"]);
    assert_eq!(devices.lines().count(), 2, "{devices}");
    assert!(ok(d, &["user", "list", "--tenant", "acme"]).lines().count() == 1);
    // A tenant disabled and enabled again from the command line.
    ok(d, &["tenant", "disable", "acme"]);
    assert!(ok(d, &["tenant", "list"]).contains("disabled"));
    ok(d, &["tenant", "enable", "acme"]);
    assert!(!ok(d, &["tenant", "list"]).contains("disabled"));
}

#[test]
fn customers_are_entities_that_users_and_devices_are_bound_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(d, &["tenant", "add", "acme"]);
    ok(d, &["class", "add", "sensor", "--tenant", "acme"]);
    ok(
        d,
        &["entity", "add", "north", "--tenant", "acme", "--customer"],
    );
    ok(d, &["entity", "add", "sales", "--tenant", "acme"]);
    ok(
        d,
        &[
            "entity",
            "add",
            "sales-east",
            "--tenant",
            "acme",
            "--parent",
            "sales",
        ],
    );
    let listed = ok(d, &["entity", "list", "--tenant", "acme"]);
    assert!(
        listed.contains("north") && listed.contains("customer"),
        "{listed}"
    );
    assert!(
        listed.contains("sales-east") && listed.contains("unit"),
        "{listed}"
    );
    ok(
        d,
        &[
            "user", "add", "nina", "--tenant", "acme", "--entity", "north", "--role", "customer",
        ],
    );
    ok(
        d,
        &[
            "device", "add", "n-1", "--tenant", "acme", "--class", "sensor", "--entity", "north",
        ],
    );

    let err = fails(d, &["entity", "add", "north", "--tenant", "acme"]);
    assert!(err.contains("entity `north` already exists"), "{err}");
    let err = fails(
        d,
        &[
            "entity", "add", "x", "--tenant", "acme", "--parent", "nowhere",
        ],
    );
    assert!(err.contains("no entity `nowhere`"), "{err}");
    let err = fails(
        d,
        &[
            "user", "add", "ned", "--tenant", "acme", "--entity", "south",
        ],
    );
    assert!(err.contains("no entity `south`"), "{err}");
}

fn installer_line(listed: &str) -> &str {
    listed
        .lines()
        .find(|l| l.starts_with("installer"))
        .unwrap_or_else(|| panic!("installer listed: {listed}"))
}

#[test]
fn a_tenant_defines_its_own_roles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(d, &["tenant", "add", "acme"]);
    let add = [
        "role",
        "add",
        "installer",
        "--tenant",
        "acme",
        "--grant",
        "devices=manage",
        "--grant",
        "classes=view",
        "--action",
        "lock",
    ];
    assert!(ok(d, &add).contains("role `installer` created"));
    let listed = ok(d, &["role", "list", "--tenant", "acme"]);
    let line = installer_line(&listed);
    assert!(
        line.contains("devices=manage") && line.contains("classes=view") && line.contains("lock"),
        "{line}"
    );
    assert!(
        listed.contains("operator"),
        "built-in roles are listed: {listed}"
    );
    assert!(!listed.contains("system administrator"), "{listed}");
    ok(
        d,
        &[
            "role",
            "set",
            "installer",
            "--tenant",
            "acme",
            "--grant",
            "devices=full",
        ],
    );
    let listed = ok(d, &["role", "list", "--tenant", "acme"]);
    let line = installer_line(&listed);
    assert!(
        line.contains("devices=full") && !line.contains("classes=view"),
        "{line}"
    );
    ok(
        d,
        &[
            "user",
            "add",
            "ian",
            "--tenant",
            "acme",
            "--role",
            "installer",
        ],
    );
    assert!(ok(d, &["user", "list", "--tenant", "acme"]).contains("installer"));

    for (args, expected) in [
        (&add[..], "role `installer` already exists"),
        (
            &[
                "role",
                "add",
                "operator",
                "--tenant",
                "acme",
                "--grant",
                "devices=view",
            ][..],
            "built-in role `operator` already exists",
        ),
        (
            &[
                "role",
                "add",
                "x",
                "--tenant",
                "acme",
                "--grant",
                "gadgets=view",
            ][..],
            "unknown object kind `gadgets`",
        ),
        (
            &[
                "role",
                "add",
                "x",
                "--tenant",
                "acme",
                "--grant",
                "tenants=full",
            ][..],
            "belongs to the platform",
        ),
        (
            &[
                "role",
                "set",
                "operator",
                "--tenant",
                "acme",
                "--grant",
                "devices=full",
            ][..],
            "built-in roles cannot be changed",
        ),
    ] {
        let err = fails(d, args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
