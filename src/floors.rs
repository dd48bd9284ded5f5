//! The floors of the crate, checked by a unit test that reads `src/`: each folder
//! imports only folders below it, so a change to a lower floor never needs the
//! ones above, and a circle between folders cannot form.
//!
//! `model` (pure) → `pg` and `redis` (adapters over each server; neither imports
//! the other) → `pipeline` and `sources` (the sources may use the pipeline's
//! dirty set, never the reverse) → `server` (the entry points Redis calls) →
//! `lib.rs` and `supervisor.rs`, the composition root.
//!
//! A second test holds the README's Layout section to the tree: it names every
//! folder and source file under `src/`, and nothing that is gone. A third keeps
//! every `ERR` reply text in `redis/replies.rs`, where each is written once. A
//! fourth fails when a page of `docs/` or the README names a file under `src/`
//! that is gone.

use std::path::{Path, PathBuf};

/// Whether code in folder `from` may name folder `to` (`crate::to::…`).
/// The root files (`lib.rs`, `supervisor.rs`) are the folder `""`.
fn allowed(from: &str, to: &str) -> bool {
    let below: &[&str] = match from {
        "model" => &[],
        "pg" | "redis" => &["model"],
        "pipeline" => &["model", "pg", "redis"],
        "sources" => &["model", "pg", "redis", "pipeline"],
        "server" => &["model", "pg", "redis", "pipeline", "sources"],
        _ => return true,
    };
    from == to || below.contains(&to)
}

/// The top folder of a file under `src/` (`""` for the root files).
fn floor_of(relative: &Path) -> String {
    let mut parts = relative.components();
    match (parts.next(), parts.next()) {
        (Some(folder), Some(_)) => folder.as_os_str().to_string_lossy().into_owned(),
        _ => String::new(),
    }
}

/// The folders a file's code names as `crate::folder`, with the line of each;
/// comments are left out (a doc may say who calls a function).
fn named_floors(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            // `$crate::` in a macro and `crate::{a, b}` groups are read the same way.
            let before = &rest[..at];
            if !name.is_empty() && !before.ends_with('$') {
                out.push((n + 1, name));
            } else if let Some(group) = after.strip_prefix('{') {
                let group: String = group.chars().take_while(|c| *c != '}').collect();
                for item in group.split(',') {
                    let first = item.trim().split("::").next().unwrap_or("").to_string();
                    if !first.is_empty() {
                        out.push((n + 1, first));
                    }
                }
            }
            rest = after;
        }
    }
    out
}

/// Every import of `root` (a `src/` folder) that points up a floor, as
/// `file:line: from → to`.
fn upward_imports(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    collect(root, &mut files);
    let floors = ["model", "pg", "redis", "pipeline", "sources", "server"];
    // The composition root's files beside `lib.rs` are the root floor.
    let root_files: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let mut out = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root).unwrap_or(&file);
        let from = floor_of(relative);
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for (line, to) in named_floors(&text) {
            let to = if root_files.contains(&to) { String::new() } else { to };
            if (to.is_empty() || floors.contains(&to.as_str())) && !allowed(&from, &to) {
                let to = if to.is_empty() { "the root" } else { to.as_str() };
                out.push(format!("src/{}:{line}: {from} → {to}", relative.display()));
            }
        }
    }
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The README's Layout section.
fn layout_section(readme: &str) -> &str {
    let start = readme.find("## Layout").unwrap_or(readme.len());
    let rest = &readme[start..];
    let end = rest[2..].find("\n## ").map_or(rest.len(), |e| e + 2);
    &rest[..end]
}

/// The folders (`name/`) and files (`name.rs`) a text names in backquotes.
fn named_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| !t.starts_with("tests/") && (t.ends_with('/') || t.ends_with(".rs")))
        .filter_map(|t| {
            t.trim_end_matches('/').rsplit('/').next().map(|last| {
                if t.ends_with('/') {
                    format!("{last}/")
                } else {
                    last.to_string()
                }
            })
        })
        .collect()
}

/// What the Layout section should name and does not, and what it names that
/// `src/` lacks. Test modules, `mod.rs` and the root's `lib.rs` need no name.
fn layout_mismatches(src: &Path, layout: &str) -> Vec<String> {
    let named = named_paths(layout);
    let mut files = Vec::new();
    collect(src, &mut files);
    let mut present: Vec<String> = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(src).unwrap_or(file);
        for folder in relative.parent().into_iter().flat_map(Path::components) {
            present.push(format!("{}/", folder.as_os_str().to_string_lossy()));
        }
        present.push(relative.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    }
    present.sort();
    present.dedup();
    let exempt = |name: &str| {
        matches!(name, "mod.rs" | "lib.rs" | "tests.rs" | "tests/")
            || name.contains("_tests")
            || name.contains("_property")
    };
    let mut out: Vec<String> =
        present.iter().filter(|p| !exempt(p) && !named.contains(p)).map(|p| format!("not named: {p}")).collect();
    out.extend(named.iter().filter(|n| *n != "src/" && !present.contains(n)).map(|n| format!("named but gone: {n}")));
    out.sort();
    out.dedup();
    out
}

/// The lines outside `redis/replies.rs` whose code holds an `ERR ` reply text.
fn reply_texts_elsewhere(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    collect(root, &mut files);
    let mut out = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root).unwrap_or(&file);
        // This file names the text it looks for.
        if relative == Path::new("redis/replies.rs") || relative == Path::new("floors.rs") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for (n, line) in text.lines().enumerate() {
            if line.split("//").next().unwrap_or("").contains("\"ERR ") {
                out.push(format!("src/{}:{}", relative.display(), n + 1));
            }
        }
    }
    out.sort();
    out
}

/// The paths under `src/` (`redis/notify.rs`, `pipeline/worker/`) that `text`
/// names in backquotes and `src` lacks; a `::item` after a file is left out.
fn gone_paths(src: &Path, text: &str) -> Vec<String> {
    let floors = ["model/", "pg/", "redis/", "pipeline/", "sources/", "server/"];
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|t| t.split("::").next().unwrap_or(t))
        .map(|t| t.strip_prefix("src/").unwrap_or(t))
        .filter(|t| floors.iter().any(|f| t.starts_with(f)) && (t.ends_with(".rs") || t.ends_with('/')))
        .filter(|t| !src.join(t).exists())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_import_points_down_a_floor() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let upward = upward_imports(&src);
        assert!(
            upward.is_empty(),
            "imports that point up a floor (src/floors.rs says which may):\n{}",
            upward.join("\n")
        );
    }

    #[test]
    fn an_upward_import_is_found() {
        let dir = std::env::temp_dir().join(format!("pgsync-floors-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("redis")).unwrap();
        std::fs::create_dir_all(dir.join("pipeline")).unwrap();
        std::fs::write(dir.join("supervisor.rs"), "use crate::server::x;\n").unwrap();
        std::fs::write(dir.join("redis/a.rs"), "// crate::server::x in a comment\nuse crate::pipeline::runtime;\n")
            .unwrap();
        std::fs::write(dir.join("redis/c.rs"), "fn f() {\n    crate::supervisor::spawn();\n}\n").unwrap();
        std::fs::write(
            dir.join("pipeline/b.rs"),
            "use crate::{model::queue, sources::listen};\nuse crate::redis::x;\n",
        )
        .unwrap();
        let found = upward_imports(&dir);
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(
            found,
            [
                "src/pipeline/b.rs:1: pipeline → sources",
                "src/redis/a.rs:2: redis → pipeline",
                "src/redis/c.rs:2: redis → the root"
            ]
        );
    }

    #[test]
    fn pg_and_redis_do_not_import_each_other() {
        assert!(!allowed("pg", "redis") && !allowed("redis", "pg"));
        assert!(allowed("sources", "pipeline") && !allowed("pipeline", "sources"));
    }

    #[test]
    fn the_readme_layout_names_every_folder_and_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let wrong = layout_mismatches(&root.join("src"), layout_section(&readme));
        assert!(wrong.is_empty(), "README.md's Layout section and src/ differ:\n{}", wrong.join("\n"));
    }

    #[test]
    fn a_stale_layout_is_found() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let wrong = layout_mismatches(&src, "## Layout\n`model/` `gone.rs`\n");
        assert!(wrong.contains(&"named but gone: gone.rs".to_string()));
        assert!(wrong.contains(&"not named: pipeline/".to_string()));
    }

    #[test]
    fn error_replies_are_written_only_in_the_replies_module() {
        let elsewhere = reply_texts_elsewhere(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
        assert!(elsewhere.is_empty(), "ERR texts outside src/redis/replies.rs:\n{}", elsewhere.join("\n"));
    }

    #[test]
    fn a_reply_text_elsewhere_is_found() {
        let dir = std::env::temp_dir().join(format!("pgsync-replies-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("redis")).unwrap();
        std::fs::write(dir.join("redis/replies.rs"), "const A: &str = \"ERR a\";\n").unwrap();
        std::fs::write(dir.join("redis/b.rs"), "// \"ERR in a comment\"\nlet e = \"ERR b\";\n").unwrap();
        let found = reply_texts_elsewhere(&dir);
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(found, ["src/redis/b.rs:2"]);
    }

    #[test]
    fn the_docs_and_readme_name_only_files_that_exist() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut gone = Vec::new();
        let pages = std::fs::read_dir(root.join("docs")).unwrap().flatten().map(|p| p.path());
        for page in pages.chain([root.join("README.md"), root.join("BENCHMARKS.md")]) {
            let Ok(text) = std::fs::read_to_string(&page) else { continue };
            for path in gone_paths(&root.join("src"), &text) {
                gone.push(format!("{}: {path}", page.display()));
            }
        }
        assert!(gone.is_empty(), "docs name files that src/ lacks:\n{}", gone.join("\n"));
    }

    #[test]
    fn a_doc_naming_a_gone_file_is_found() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let text = "`redis/notify.rs::send`, `server/capture.rs`, `src/pipeline/worker/`, `src/sources/gone/`, `x.rs`";
        assert_eq!(gone_paths(&src, text), ["server/capture.rs", "sources/gone/"]);
    }
}
