//! The docs hold together: every relative link in the repository's Markdown leads to
//! a file that exists, and to a heading that exists when it names one; every page of
//! `docs/` is listed in `docs/README.md` and reachable from the README; the README
//! stays a first screen. No network: links to other sites are not followed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};

/// The README is the first screen; the reference lives in `docs/`.
const README_MAX_LINES: usize = 250;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One Markdown file: its headings' anchors and its links, outside code blocks.
struct Page {
    anchors: BTreeSet<String>,
    /// (line number, link target as written)
    links: Vec<(usize, String)>,
}

/// Every `*.md` under the root, skipping build output, dependencies and hidden folders.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                    walk(&path, found);
                }
            } else if name.ends_with(".md") {
                found.push(path);
            }
        }
    }
    let mut found = vec![];
    walk(root(), &mut found);
    found.sort();
    found
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// Drops inline code spans, so a `[x](y)` quoted as code is not taken for a link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

fn parse(text: &str) -> Page {
    let mut anchors = BTreeSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut links = vec![];
    let mut in_fence = false;
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let base = slug(&line[hashes..]);
            // A repeated heading gets -1, -2, … as on GitHub.
            let count = seen.entry(base.clone()).or_insert(0);
            let anchor = match *count {
                0 => base.clone(),
                n => format!("{base}-{n}"),
            };
            *count += 1;
            anchors.insert(anchor);
        }
        let plain = without_code_spans(line);
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            links.push((number + 1, after[..end].trim().to_owned()));
            rest = &after[end..];
        }
    }
    Page { anchors, links }
}

/// `base/target` with `.` and `..` resolved, without touching the file system.
fn join(base: &Path, target: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for part in base.join(target).components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn is_external(target: &str) -> bool {
    target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:")
}

/// Every page, parsed, by path.
fn pages() -> BTreeMap<PathBuf, Page> {
    markdown_files()
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, parse(&text))
        })
        .collect()
}

/// The Markdown pages a page links to (resolved paths).
fn linked_pages(path: &Path, page: &Page) -> Vec<PathBuf> {
    page.links
        .iter()
        .filter(|(_, target)| !is_external(target) && !target.starts_with('#'))
        .map(|(_, target)| join(path.parent().unwrap(), target.split('#').next().unwrap()))
        .filter(|target| target.extension().is_some_and(|ext| ext == "md"))
        .collect()
}

fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_relative_link_leads_to_a_file_and_heading_that_exist() {
    let pages = pages();
    assert!(pages.contains_key(&root().join("README.md")));
    let mut dead = vec![];
    for (path, page) in &pages {
        for (line, target) in &page.links {
            if is_external(target) {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file = if file.is_empty() {
                path.clone()
            } else {
                join(path.parent().unwrap(), file)
            };
            let here = format!("{}:{line}: ({target})", shown(path));
            if !file.starts_with(root()) {
                dead.push(format!("{here} points outside the repository"));
            } else if !file.exists() {
                dead.push(format!("{here}: no file {}", shown(&file)));
            } else if let Some(anchor) = anchor {
                match pages.get(&file) {
                    Some(target_page) if target_page.anchors.contains(anchor) => {}
                    Some(_) => {
                        dead.push(format!("{here}: no heading #{anchor} in {}", shown(&file)))
                    }
                    None => dead.push(format!("{here}: #{anchor} on a page that is not Markdown")),
                }
            }
        }
    }
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
}

#[test]
fn every_page_of_the_docs_is_in_its_index_and_reachable_from_the_readme() {
    let pages = pages();
    let docs = root().join("docs");
    let index_path = docs.join("README.md");
    let index = pages
        .get(&index_path)
        .expect("docs/README.md, the index of the docs");
    let listed: BTreeSet<PathBuf> = index
        .links
        .iter()
        .filter(|(_, target)| !is_external(target))
        .map(|(_, target)| join(&docs, target.split('#').next().unwrap()))
        .collect();
    let mut unlisted = vec![];
    for entry in std::fs::read_dir(&docs).unwrap() {
        let path = entry.unwrap().path();
        if path != index_path && path.is_file() && !listed.contains(&path) {
            unlisted.push(shown(&path));
        }
    }
    assert!(
        unlisted.is_empty(),
        "docs/README.md lists every page of docs/ with one line; missing: {unlisted:?}"
    );

    // Every Markdown page under docs/ and tests/README.md is reached from the README
    // by following links.
    let start = root().join("README.md");
    let mut reached = BTreeSet::from([start.clone()]);
    let mut queue = VecDeque::from([start]);
    while let Some(path) = queue.pop_front() {
        let Some(page) = pages.get(&path) else {
            continue;
        };
        for next in linked_pages(&path, page) {
            if reached.insert(next.clone()) {
                queue.push_back(next);
            }
        }
    }
    let unreached: Vec<String> = pages
        .keys()
        .filter(|path| path.starts_with(&docs) || **path == root().join("tests/README.md"))
        .filter(|path| !reached.contains(*path))
        .map(|path| shown(path))
        .collect();
    assert!(
        unreached.is_empty(),
        "not reachable from README.md: {unreached:?}"
    );
}

#[test]
fn the_readme_is_a_first_screen() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; the reference belongs in docs/ (at most {README_MAX_LINES})"
    );
    for needed in [
        "cargo run --release -- serve --demo",
        "cargo run --release -- serve",
        "cargo nextest run --workspace",
        "examples/first-session.sh",
    ] {
        assert!(readme.contains(needed), "the README must show `{needed}`");
    }
}

#[test]
fn the_slug_follows_githubs_rule() {
    assert_eq!(
        slug(" The product in one minute: `serve --demo`"),
        "the-product-in-one-minute-serve---demo"
    );
    assert_eq!(
        slug(" Monitoring → Operations and the consistency model"),
        "monitoring--operations-and-the-consistency-model"
    );
    assert_eq!(slug(" The binary's layers"), "the-binarys-layers");
    assert_eq!(slug(" Setup (admin token)"), "setup-admin-token");
}

#[test]
fn a_dead_link_or_a_missing_heading_is_seen() {
    let page = parse(
        "# Title\n\n## Title\n\nSee [a](b.md#c) and `[not](a link)`.\n```\n[nor](this)\n# nor a heading\n```\n",
    );
    assert_eq!(
        page.anchors,
        BTreeSet::from(["title".to_owned(), "title-1".to_owned()])
    );
    assert_eq!(page.links, vec![(5, "b.md#c".to_owned())]);
}
