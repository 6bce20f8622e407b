//! The deployment files shipped in docs/deploy: the systemd unit passes systemd's own check
//! (`systemd-analyze verify`, with its `ExecStart` pointed at the binary under test) and its
//! sandbox keeps systemd's exposure score low (`systemd-analyze security`), so a directive that
//! is dropped or misspelt fails here.

use std::path::Path;
use std::process::Command;

/// systemd's exposure score of the unit (0 best, 10 worst) at most this: 1.7 when written.
const MAX_EXPOSURE: f64 = 2.0;

#[test]
fn the_systemd_unit_verifies_and_keeps_its_sandbox() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/deploy/klausur.service");
    let unit = std::fs::read_to_string(&shipped).expect("docs/deploy/klausur.service");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/klausur "),
        "the unit starts /usr/local/bin/klausur"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("klausur.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/klausur", env!("CARGO_BIN_EXE_klausur")),
    )
    .expect("unit");
    let analyze = |args: &[&str]| {
        let out = Command::new("systemd-analyze")
            .args(args)
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian's `systemd`; scripts/setup.sh installs it)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = analyze(&["verify"]);
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
    let (_, text) = analyze(&["security", "--offline=true", "--no-pager"]);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for klausur.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score:\n{text}"));
    assert!(score <= MAX_EXPOSURE, "exposure {score}:\n{text}");

    // The control: the same unit without its sandbox scores far worse.
    let bare: String = unit
        .lines()
        .filter(|l| {
            ![
                "Protect",
                "Private",
                "Restrict",
                "SystemCall",
                "Capability",
                "NoNewPriv",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        &path,
        bare.replace("/usr/local/bin/klausur", env!("CARGO_BIN_EXE_klausur")),
    )
    .expect("unit");
    let (_, text) = analyze(&["security", "--offline=true", "--no-pager"]);
    assert!(
        text.lines().any(|l| l.contains("Overall exposure level")
            && l.split(": ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok())
                .is_some_and(|s| s > MAX_EXPOSURE + 3.0)),
        "{text}"
    );
}
