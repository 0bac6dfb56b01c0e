//! The layers of `src/`, kept by a test: it reads every module's paths
//! (`use` items and paths in code and macro bodies, `crate::`, `super::`,
//! `self::` and child modules, `pub use` re-exports followed to where a name
//! is defined) and fails on
//!
//! - an import between top-level modules against the layer order below, and
//! - an import cycle between modules at any depth: between files, and between
//!   the folders they sit in, one folder level at a time.
//!
//! A parent module (`mod.rs`) is a module like any other: when it imports a
//! child and the child imports something the parent itself defines, that is a
//! cycle. So a folder's `mod.rs` only declares and hands on its children's
//! names, and what its children share lives in a child of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// The layers, lowest first: a module may import modules of lower layers only.
const LAYERS: &[(&str, u8, &str)] = &[
    ("chain", 0, "pure hashing of the tamper-evidence chains"),
    (
        "write",
        1,
        "the event store, the executor, snapshots, idempotency records",
    ),
    (
        "read",
        2,
        "catch-up, views, view queries, replicas, session positions",
    ),
    ("app", 3, "the use cases"),
    ("audit", 3, "the audit commands"),
    ("provider", 4, "the built-in worker's providers"),
    ("web", 4, "the HTTP API and the console"),
    ("process", 5, "server, CLI, worker loop, demo, telemetry"),
];

type Module = Vec<String>;

#[derive(Default)]
struct Crate {
    /// Every module (files and inline modules) and the file it lives in.
    modules: BTreeMap<Module, PathBuf>,
    /// Per module: the names its own items define.
    definitions: BTreeMap<Module, BTreeSet<String>>,
    /// Per module: names it hands on with `pub use`, to the path they name.
    reexports: BTreeMap<Module, BTreeMap<String, Vec<String>>>,
    /// Per module: modules whose every name it hands on (`pub use x::*`).
    globs: BTreeMap<Module, Vec<Vec<String>>>,
    /// Per file module: (absolute path referenced, the scope it was written in).
    references: BTreeMap<Module, Vec<Vec<String>>>,
}

fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            into.push(path);
        }
    }
}

fn is_ident(tree: Option<&TokenTree>, name: &str) -> bool {
    matches!(tree, Some(TokenTree::Ident(ident)) if ident == name)
}

fn is_punct(tree: Option<&TokenTree>, ch: char) -> bool {
    matches!(tree, Some(TokenTree::Punct(punct)) if punct.as_char() == ch)
}

/// `::` at `tokens[at]`.
fn is_path_sep(tokens: &[TokenTree], at: usize) -> bool {
    is_punct(tokens.get(at), ':') && is_punct(tokens.get(at + 1), ':')
}

/// One file's scan: `scope` is the module the tokens are written in (a file
/// module or an inline module inside it).
struct Scan<'a> {
    krate: &'a mut Crate,
    file_module: Module,
    children: BTreeMap<Module, BTreeSet<String>>,
}

impl Scan<'_> {
    /// The absolute path of a path written in `scope` starting with `first`.
    fn absolute(&self, scope: &Module, first: &str) -> Option<Module> {
        match first {
            "crate" => Some(Vec::new()),
            "self" => Some(scope.clone()),
            "super" => {
                let mut parent = scope.clone();
                parent.pop()?;
                Some(parent)
            }
            child
                if self
                    .children
                    .get(scope)
                    .is_some_and(|children| children.contains(child)) =>
            {
                let mut path = scope.clone();
                path.push(child.to_owned());
                Some(path)
            }
            _ => None,
        }
    }

    /// Reads a path's segments from `tokens[at..]` after its first segment
    /// (already resolved to `base`): `::`-separated identifiers (`super` moving
    /// up), ending in a name, `*` or a `{…}` use tree. Returns every leaf path
    /// and the index after the path.
    fn segments(&self, tokens: &[TokenTree], mut at: usize, base: Module) -> (Vec<Module>, usize) {
        let mut path = base;
        while is_path_sep(tokens, at) {
            at += 2;
            match tokens.get(at) {
                Some(TokenTree::Ident(ident)) if ident == "super" => {
                    path.pop();
                    at += 1;
                }
                Some(TokenTree::Ident(ident)) if ident == "self" => at += 1,
                Some(TokenTree::Ident(ident)) => {
                    path.push(ident.to_string());
                    at += 1;
                }
                Some(TokenTree::Punct(punct)) if punct.as_char() == '*' => {
                    path.push("*".to_owned());
                    return (vec![path], at + 1);
                }
                Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Brace => {
                    let inner: Vec<TokenTree> = group.stream().into_iter().collect();
                    let mut leaves = Vec::new();
                    for item in inner.split(|tree| is_punct(Some(tree), ',')) {
                        if item.is_empty() {
                            continue;
                        }
                        let (first, rest_at) = match &item[0] {
                            TokenTree::Ident(ident) if ident == "self" => (path.clone(), 1),
                            TokenTree::Ident(ident) if ident == "super" => {
                                let mut up = path.clone();
                                up.pop();
                                (up, 1)
                            }
                            TokenTree::Ident(ident) => {
                                let mut down = path.clone();
                                down.push(ident.to_string());
                                (down, 1)
                            }
                            TokenTree::Punct(punct) if punct.as_char() == '*' => {
                                let mut glob = path.clone();
                                glob.push("*".to_owned());
                                leaves.push(glob);
                                continue;
                            }
                            _ => continue,
                        };
                        leaves.extend(self.segments(item, rest_at, first).0);
                    }
                    return (leaves, at + 1);
                }
                _ => break,
            }
        }
        (vec![path], at)
    }

    /// Walks a token stream written in `scope`; `items` when the tokens are a
    /// module's items (a file, or an inline module's body).
    fn walk(&mut self, tokens: &[TokenTree], scope: &Module, items: bool) {
        if items {
            self.define(tokens, scope);
        }
        // Inline and file modules declared here are in scope by name.
        for window in tokens.windows(2) {
            if is_ident(Some(&window[0]), "mod") {
                if let TokenTree::Ident(name) = &window[1] {
                    let mut child = scope.clone();
                    child.push(name.to_string());
                    self.children
                        .entry(scope.clone())
                        .or_default()
                        .insert(name.to_string());
                    self.krate
                        .modules
                        .entry(child)
                        .or_insert_with(|| PathBuf::from("(inline)"));
                }
            }
        }
        let mut at = 0;
        while at < tokens.len() {
            let tree = &tokens[at];
            // `mod name { … }`: its body is written in the inline module.
            if is_ident(Some(tree), "mod") {
                if let (Some(TokenTree::Ident(name)), Some(TokenTree::Group(body))) =
                    (tokens.get(at + 1), tokens.get(at + 2))
                {
                    if body.delimiter() == Delimiter::Brace {
                        let mut inner = scope.clone();
                        inner.push(name.to_string());
                        let body: Vec<TokenTree> = body.stream().into_iter().collect();
                        self.walk(&body, &inner, true);
                        at += 3;
                        continue;
                    }
                }
            }
            // `pub use …;` (any visibility) hands names on.
            let public_use = is_ident(Some(tree), "pub")
                && (is_ident(tokens.get(at + 1), "use")
                    || (matches!(tokens.get(at + 1), Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Parenthesis)
                        && is_ident(tokens.get(at + 2), "use")));
            if public_use {
                let use_at = if is_ident(tokens.get(at + 1), "use") {
                    at + 1
                } else {
                    at + 2
                };
                let end = (use_at..tokens.len())
                    .find(|&i| is_punct(tokens.get(i), ';'))
                    .unwrap_or(tokens.len());
                let item = &tokens[use_at + 1..end];
                let leaves = self.use_leaves(item, scope);
                for (name, target) in leaves {
                    if name == "*" {
                        self.krate
                            .globs
                            .entry(scope.clone())
                            .or_default()
                            .push(target.clone());
                    } else {
                        self.krate
                            .reexports
                            .entry(scope.clone())
                            .or_default()
                            .insert(name, target.clone());
                    }
                    self.reference(target);
                }
                at = end + 1;
                continue;
            }
            match tree {
                TokenTree::Group(group) => {
                    let inner: Vec<TokenTree> = group.stream().into_iter().collect();
                    self.walk(&inner, scope, false);
                    at += 1;
                }
                TokenTree::Ident(ident) if is_path_sep(tokens, at + 1) => {
                    // Not a path's first segment when it follows `::` or `.`.
                    let continued = at >= 2 && is_path_sep(tokens, at - 2)
                        || at >= 1 && is_punct(tokens.get(at - 1), '.');
                    let first = ident.to_string();
                    match (continued, self.absolute(scope, &first)) {
                        (false, Some(base)) => {
                            let (leaves, next) = self.segments(tokens, at + 1, base);
                            for leaf in leaves {
                                self.reference(leaf);
                            }
                            at = next;
                        }
                        _ => at += 1,
                    }
                }
                _ => at += 1,
            }
        }
    }

    /// Records the names a module's items define: `fn`, `struct`, `enum`,
    /// `union`, `trait`, `type`, `const`, `static`, `mod` and `macro_rules!`.
    fn define(&mut self, tokens: &[TokenTree], scope: &Module) {
        const KEYWORDS: &[&str] = &[
            "fn", "struct", "enum", "union", "trait", "type", "const", "static", "mod",
        ];
        let names = self.krate.definitions.entry(scope.clone()).or_default();
        for (at, tree) in tokens.iter().enumerate() {
            let TokenTree::Ident(keyword) = tree else {
                continue;
            };
            let keyword = keyword.to_string();
            let name_at = if KEYWORDS.contains(&keyword.as_str()) {
                at + 1
            } else if keyword == "macro_rules" && is_punct(tokens.get(at + 1), '!') {
                at + 2
            } else {
                continue;
            };
            if let Some(TokenTree::Ident(name)) = tokens.get(name_at) {
                names.insert(name.to_string());
            }
        }
    }

    /// A `pub use` item's leaves: (the name handed on, the path it names).
    fn use_leaves(&self, item: &[TokenTree], scope: &Module) -> Vec<(String, Vec<String>)> {
        let Some(TokenTree::Ident(first)) = item.first() else {
            return Vec::new();
        };
        let Some(base) = self.absolute(scope, &first.to_string()) else {
            return Vec::new(); // an external crate's names
        };
        // Renames (`x as y`) hand `y` on; the scan keeps the last segment's name,
        // which names the same definition for the cycle check.
        let (leaves, _) = self.segments(item, 1, base);
        leaves
            .into_iter()
            .filter_map(|leaf| Some((leaf.last()?.clone(), leaf)))
            .collect()
    }

    fn reference(&mut self, path: Vec<String>) {
        self.krate
            .references
            .entry(self.file_module.clone())
            .or_default()
            .push(path);
    }
}

impl Crate {
    fn read(src: &Path) -> Self {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        files.retain(|file| file.file_name().is_some_and(|name| name != "main.rs"));
        files.sort();
        let mut krate = Crate::default();
        for file in &files {
            krate.modules.insert(module_of(src, file), file.clone());
        }
        for file in &files {
            let text = std::fs::read_to_string(file).expect("read a source file");
            let tokens: Vec<TokenTree> = TokenStream::from_str(&text)
                .unwrap_or_else(|error| panic!("{} does not tokenize: {error}", file.display()))
                .into_iter()
                .collect();
            let module = module_of(src, file);
            let mut scan = Scan {
                krate: &mut krate,
                file_module: module.clone(),
                children: BTreeMap::new(),
            };
            scan.walk(&tokens, &module, true);
        }
        krate
    }

    /// The file module that defines what `path` names, following re-exports.
    fn resolve(&self, path: &[String], depth: usize) -> Module {
        let mut known = path.len();
        while known > 0 && !self.modules.contains_key(&path[..known]) {
            known -= 1;
        }
        let module = path[..known].to_vec();
        if let Some(found) = path
            .get(known)
            .and_then(|name| self.onward(&module, name, &path[known + 1..], depth))
        {
            return found;
        }
        self.file_module(&module)
    }

    /// Where `module`'s name `name` is defined, when `module` only hands it on.
    fn onward(&self, module: &Module, name: &str, rest: &[String], depth: usize) -> Option<Module> {
        if depth >= 16
            || self
                .definitions
                .get(module)
                .is_some_and(|names| names.contains(name))
        {
            return None;
        }
        if let Some(target) = self.reexports.get(module).and_then(|names| names.get(name)) {
            let mut onward = target.clone();
            onward.extend(rest.iter().cloned());
            return Some(self.resolve(&onward, depth + 1));
        }
        self.globs
            .get(module)
            .into_iter()
            .flatten()
            .find_map(|glob| {
                let from = glob[..glob.len() - 1].to_vec();
                let handed_on = self
                    .definitions
                    .get(&from)
                    .is_some_and(|names| names.contains(name))
                    || self.onward(&from, name, rest, depth + 1).is_some();
                handed_on.then(|| {
                    let mut onward = from.clone();
                    onward.push(name.to_owned());
                    onward.extend(rest.iter().cloned());
                    self.resolve(&onward, depth + 1)
                })
            })
    }

    /// The file an inline module lives in.
    fn file_module(&self, module: &[String]) -> Module {
        let mut module = module.to_vec();
        while self
            .modules
            .get(&module)
            .is_some_and(|file| file.as_os_str() == "(inline)")
        {
            module.pop();
        }
        module
    }

    /// Every import between two file modules, with the paths behind it.
    fn imports(&self) -> BTreeMap<(Module, Module), BTreeSet<String>> {
        let mut edges: BTreeMap<(Module, Module), BTreeSet<String>> = BTreeMap::new();
        for (from, paths) in &self.references {
            for path in paths {
                let to = self.resolve(path, 0);
                if &to != from && !to.is_empty() {
                    edges
                        .entry((from.clone(), to))
                        .or_default()
                        .insert(path.join("::"));
                }
            }
        }
        edges
    }
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// Strongly connected components of more than one node (Tarjan's algorithm).
fn cycles(edges: &BTreeSet<(Module, Module)>) -> Vec<Vec<Module>> {
    let nodes: BTreeSet<&Module> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    let nodes: Vec<&Module> = nodes.into_iter().collect();
    let index_of: BTreeMap<&Module, usize> =
        nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (a, b) in edges {
        next[index_of[a]].push(index_of[b]);
    }
    struct Tarjan<'a> {
        next: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        found: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.counter);
            self.low[v] = self.counter;
            self.counter += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.next[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(index) if self.on_stack[w] => self.low[v] = self.low[v].min(index),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        next: &next,
        index: vec![None; nodes.len()],
        low: vec![0; nodes.len()],
        on_stack: vec![false; nodes.len()],
        stack: Vec::new(),
        counter: 0,
        found: Vec::new(),
    };
    for v in 0..nodes.len() {
        if tarjan.index[v].is_none() {
            tarjan.visit(v);
        }
    }
    tarjan
        .found
        .into_iter()
        .map(|component| {
            let mut members: Vec<Module> =
                component.into_iter().map(|i| nodes[i].clone()).collect();
            members.sort();
            members
        })
        .collect()
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_imports_one_of_a_higher_layer() {
    let krate = Crate::read(&src());
    let rank: BTreeMap<&str, u8> = LAYERS
        .iter()
        .map(|(name, rank, _)| (*name, *rank))
        .collect();
    let mut wrong = Vec::new();
    for module in krate.modules.keys().filter(|module| module.len() == 1) {
        if !rank.contains_key(module[0].as_str()) {
            wrong.push(format!(
                "`{}` is in no layer: place it in LAYERS",
                module[0]
            ));
        }
    }
    for ((from, to), paths) in krate.imports() {
        let (Some(a), Some(b)) = (from.first(), to.first()) else {
            continue;
        };
        if a == b {
            continue;
        }
        let (Some(ra), Some(rb)) = (rank.get(a.as_str()), rank.get(b.as_str())) else {
            continue;
        };
        if ra <= rb {
            wrong.push(format!(
                "{} (layer {ra}) imports {} (layer {rb}): {}",
                name(&from),
                name(&to),
                paths.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_import_cycle_between_modules_at_any_depth() {
    let krate = Crate::read(&src());
    let imports = krate.imports();
    let deepest = krate.modules.keys().map(Vec::len).max().unwrap_or(0);
    let mut found = Vec::new();
    for depth in 1..=deepest {
        let cut = |module: &Module| module[..module.len().min(depth)].to_vec();
        let edges: BTreeSet<(Module, Module)> = imports
            .keys()
            .map(|(from, to)| (cut(from), cut(to)))
            .filter(|(from, to)| from != to)
            .collect();
        for cycle in cycles(&edges) {
            let ties: Vec<String> = imports
                .iter()
                .filter(|((from, to), _)| {
                    cycle.contains(&cut(from)) && cycle.contains(&cut(to)) && cut(from) != cut(to)
                })
                .map(|((from, to), paths)| {
                    format!(
                        "    {} -> {}: {}",
                        name(from),
                        name(to),
                        paths.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                })
                .collect();
            found.push(format!(
                "depth {depth}: {}\n{}",
                cycle.iter().map(|m| name(m)).collect::<Vec<_>>().join(", "),
                ties.join("\n")
            ));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// The scanner itself, on a small crate written here: it must see what the
/// real tree's check relies on, or a green run would mean nothing.
#[test]
fn the_scanner_sees_use_trees_inline_paths_macros_and_reexports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a; pub mod b; pub mod c;").unwrap();
    std::fs::write(src.join("a/mod.rs"), "mod inner; pub use inner::Thing;").unwrap();
    std::fs::write(
        src.join("a/inner.rs"),
        "pub struct Thing; fn f() { tracing::warn!(x = %crate::c::render()); }",
    )
    .unwrap();
    std::fs::write(src.join("b.rs"), "use crate::{a::{self, Thing}, c};").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub fn render() {} #[cfg(test)] mod tests { use super::super::b; }",
    )
    .unwrap();
    let krate = Crate::read(src);
    let edges: BTreeSet<(String, String)> = krate
        .imports()
        .into_keys()
        .map(|(from, to)| (name(&from), name(&to)))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("a", "a::inner"), // the re-export
        ("a::inner", "c"), // a path inside a macro's arguments
        ("b", "a"),        // `a::{self}`
        ("b", "a::inner"), // `Thing`, through the re-export, to where it is defined
        ("b", "c"),
        ("c", "b"), // from an inline test module, through `super::super`
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(edges, expected);
    let all: BTreeSet<(Module, Module)> = krate.imports().into_keys().collect();
    let modules = |names: &[&str]| -> Vec<Module> {
        names
            .iter()
            .map(|name| name.split("::").map(str::to_owned).collect())
            .collect()
    };
    assert_eq!(
        cycles(&all),
        vec![modules(&["a", "a::inner", "b", "c"])],
        "a -> a::inner (re-export) -> c (macro) -> b (test module) -> a is one loop"
    );
}
