//! The binary end to end: a generated export verifies; a changed byte, a deleted, inserted or
//! reordered entry fails with the entry named; bad arguments exit 2.

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cordon_audit::chain::Chain;
use cordon_audit::export::{Line, write_export};
use cordon_audit::head::TreeHead;
use cordon_audit::keys::Signer;
use cordon_audit::merkle::Tree;
use cordon_audit::record::{AuditRecord, Decision, Ident};

struct Setup {
    dir: PathBuf,
    export: String,
    args: Vec<String>,
}

fn id(s: &str) -> Ident {
    Ident::new("test", s).unwrap()
}

fn setup(name: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("cordon-verify-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (node_key, cp) = (Signer::from_seed(&[4; 32]), Signer::from_seed(&[5; 32]));
    let mut chain = Chain::genesis(id("envoy-1"));
    let entries: Vec<Vec<u8>> =
        (0..5).map(|i| chain.seal_record(i, AuditRecord::new(id(&format!("req-{i}")), Decision::Allow, id("ok"))).unwrap().bytes).collect();
    let batch = node_key.sign_batch(&id("envoy-1"), 0, entries.clone()).signature_part();
    let mut tree = Tree::new();
    let mut heads = Vec::new();
    for e in &entries {
        tree.append(e);
        if tree.len() == 3 || tree.len() == 5 {
            heads.push(cp.sign_head(TreeHead { size: tree.len(), root: tree.root(), time_ms: tree.len() }));
        }
    }
    let export = write_export(&entries, &[batch], &heads).unwrap();
    std::fs::write(dir.join("keys.txt"), format!("# node keys\nenvoy-1 {}\n", STANDARD.encode(node_key.public_key()))).unwrap();
    std::fs::write(dir.join("pinned.json"), Line::head(&heads[0]).to_json()).unwrap();
    let args = vec![
        "--node-keys".to_owned(),
        dir.join("keys.txt").display().to_string(),
        "--control-plane-key".to_owned(),
        STANDARD.encode(cp.public_key()),
        "--pinned-head".to_owned(),
        dir.join("pinned.json").display().to_string(),
    ];
    Setup { dir, export, args }
}

fn run(s: &Setup, export: &str) -> (i32, String) {
    let path = s.dir.join("export.jsonl");
    std::fs::write(&path, export).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cordon-verify")).arg(&path).args(&s.args).output().unwrap();
    (out.status.code().unwrap(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_generated_export_verifies() {
    let s = setup("ok");
    let (code, out) = run(&s, &s.export);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK: 5 entries (5 records, 0 gap entries, 0 pruned by retention) from 1 nodes, 2 signed tree heads"), "{out}");
    assert!(out.contains("extends the pinned head of size 3"), "{out}");
}

#[test]
fn one_changed_byte_fails_with_the_line_named() {
    let s = setup("byte");
    // A byte inside the base64 of leaf 1 (line 3).
    let line3 = s.export.lines().take(2).map(|l| l.len() + 1).sum::<usize>();
    let at = line3 + s.export.lines().nth(2).unwrap().find("\"entry\":\"").unwrap() + 20;
    let mut bytes = s.export.clone().into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let (code, out) = run(&s, &String::from_utf8(bytes).unwrap());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED"), "{out}");
    assert!(out.contains("line 3: "), "{out}");
}

#[test]
fn deleted_inserted_and_reordered_entries_are_named() {
    let s = setup("edit");
    let lines: Vec<&str> = s.export.lines().collect();
    let join = |l: &[String]| l.iter().map(|x| format!("{x}\n")).collect::<String>();
    let owned: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();

    let mut deleted = owned.clone();
    deleted.remove(3);
    let (code, out) = run(&s, &join(&deleted));
    assert_eq!(code, 1);
    assert!(out.contains("covers seq 2, which is not in the export: the entry was deleted"), "{out}");

    let mut inserted = owned.clone();
    inserted.insert(4, owned[3].replace("\"leaf\":2", "\"leaf\":3"));
    let (code, out) = run(&s, &join(&inserted));
    assert_eq!(code, 1);
    assert!(out.contains("line 5: node envoy-1 seq 2 appears again"), "{out}");

    let mut reordered = owned.clone();
    reordered[2] = owned[3].replace("\"leaf\":2", "\"leaf\":1");
    reordered[3] = owned[2].replace("\"leaf\":1", "\"leaf\":2");
    let (code, out) = run(&s, &join(&reordered));
    assert_eq!(code, 1);
    assert!(out.contains("line 4: node envoy-1 seq 1 comes after seq 2 (line 3): entries were reordered"), "{out}");
}

#[test]
fn a_bad_key_is_a_usage_error() {
    let mut s = setup("usage");
    s.args[3] = "not-base64!".to_owned();
    let (code, out) = run(&s, &s.export.clone());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--control-plane-key"), "{out}");
}
