//! The shape of the code, checked by parsing it with `syn`:
//!
//! - **No function over 100 lines** in the three crates' sources (unit
//!   tests aside): a long function carries a whole story that should be
//!   told in named parts. Measured from `fn` to the closing brace.
//! - **No module cycle**: in every crate, at every level of nesting, the
//!   modules that share a parent can be put in an order where each uses
//!   only those before it. A module in a cycle can be neither read nor
//!   tested alone. References are `crate::`, `super::` and `self::` paths,
//!   in code, `use` trees and macro arguments; doc links do not count, and
//!   neither do unit-test modules (a test may use what sits above it, as a
//!   dev-dependency may).
//! - **Thin entry points**: every module of a binary's `cli/` folder (one a
//!   subcommand) is at most 150 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::spanned::Spanned;
use syn::visit::Visit;

const LIMIT: usize = 100;

/// The crates checked: (name, source folder, root files).
const CRATES: &[(&str, &str, &[&str])] = &[
    ("connector", "connector/src", &["lib.rs", "main.rs"]),
    ("relay-sim", "relay-sim/src", &["lib.rs", "main.rs"]),
    ("conformance", "conformance/src", &["lib.rs", "main.rs"]),
];

fn is_test_module(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test"))
}

fn parse(path: &Path) -> syn::File {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), e.span().start().line))
}

// ---- function length ----------------------------------------------------

/// Functions over the limit: (file, line, name, lines).
#[derive(Default)]
struct Long {
    file: PathBuf,
    found: Vec<(PathBuf, usize, String, usize)>,
}

impl Long {
    fn measure(&mut self, name: &syn::Ident, fn_token: proc_macro2::Span, block: &syn::Block) {
        let (first, last) = (fn_token.start().line, block.brace_token.span.close().end().line);
        let lines = last + 1 - first;
        if lines > LIMIT {
            self.found.push((self.file.clone(), first, name.to_string(), lines));
        }
    }
}

impl<'ast> Visit<'ast> for Long {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.measure(&f.sig.ident, f.sig.fn_token.span(), &f.block);
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.measure(&f.sig.ident, f.sig.fn_token.span(), &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.measure(&f.sig.ident, f.sig.fn_token.span(), block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }

    /// Unit tests may be as long as their story.
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_test_module(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_function_is_longer_than_100_lines() {
    let root = connsim_tests::workspace_root();
    let mut files = Vec::new();
    for (_, dir, _) in CRATES {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut long = Long::default();
    for f in files {
        long.file = f.strip_prefix(&root).unwrap_or(&f).to_path_buf();
        long.visit_file(&parse(&f));
    }
    let report: Vec<String> =
        long.found.iter().map(|(f, line, name, n)| format!("{}:{line} {name}: {n} lines", f.display())).collect();
    assert!(report.is_empty(), "functions over {LIMIT} lines (split them):\n{}", report.join("\n"));
}

/// The measure itself: a function of 101 lines is found, one of 100 is not,
/// a trait's default method counts, and nothing in a test module does.
#[test]
fn the_measure_counts_from_fn_to_the_closing_brace() {
    let body = |n: usize| (0..n - 2).map(|i| format!("    let _x{i} = {i};\n")).collect::<String>();
    let text = format!(
        "fn long() {{\n{}}}\nfn ok() {{\n{}}}\ntrait T {{\nfn dflt() {{\n{}}}\n}}\n#[cfg(test)]\nmod tests {{\n    fn t() {{\n{}    }}\n}}\n",
        body(101),
        body(100),
        body(102),
        body(200)
    );
    let mut long = Long::default();
    long.visit_file(&syn::parse_file(&text).expect("parses"));
    let names: Vec<(&str, usize)> = long.found.iter().map(|(_, _, n, l)| (n.as_str(), *l)).collect();
    assert_eq!(names, [("long", 101), ("dflt", 102)]);
}

// ---- module cycles ------------------------------------------------------

/// A module's path from its crate's root (`["pki", "trust"]`).
type ModPath = Vec<String>;

/// What one crate's modules refer to.
#[derive(Default)]
struct Graph {
    modules: BTreeSet<ModPath>,
    /// (from, to) → where: the first reference seen, as `file:line`.
    refs: BTreeMap<(ModPath, ModPath), String>,
    /// Names a module brings in with `use` (and `pub use`): (module, name)
    /// → the path it stands for, so that `crate::Name`, re-exported at the
    /// root from a module, counts as a reference to that module.
    aliases: BTreeMap<(ModPath, String), Vec<String>>,
}

/// Walks one file's items, knowing which module it is in.
struct Refs<'g> {
    graph: &'g mut Graph,
    module: ModPath,
    /// Raw references: (module they were made in, path as written, line).
    raw: Vec<(ModPath, Vec<String>, usize)>,
}

impl Refs<'_> {
    fn note(&mut self, segments: Vec<String>, line: usize) {
        if matches!(segments.first().map(String::as_str), Some("crate" | "super" | "self")) {
            self.raw.push((self.module.clone(), segments, line));
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.leaf(prefix, &n.ident, &n.ident),
            syn::UseTree::Rename(r) => self.leaf(prefix, &r.ident, &r.rename),
            syn::UseTree::Glob(g) => self.note(prefix.clone(), g.star_token.span().start().line),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(prefix, t)),
        }
    }

    fn leaf(&mut self, prefix: &[String], ident: &syn::Ident, local: &syn::Ident) {
        let mut path = prefix.to_vec();
        if ident != "self" {
            path.push(ident.to_string());
        }
        let name = if local == "self" { prefix.last().cloned().unwrap_or_default() } else { local.to_string() };
        self.graph.aliases.entry((self.module.clone(), name)).or_insert_with(|| path.clone());
        self.note(path, ident.span().start().line);
    }

    /// `crate :: a :: b` sequences inside a macro's arguments.
    fn tokens(&mut self, stream: TokenStream) {
        let tokens: Vec<TokenTree> = stream.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if matches!(id.to_string().as_str(), "crate" | "super" | "self") => {
                    let mut path = vec![id.to_string()];
                    let mut j = i + 1;
                    while let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)), Some(TokenTree::Ident(next))) =
                        (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        path.push(next.to_string());
                        j += 3;
                    }
                    if path.len() > 1 {
                        self.note(path, id.span().start().line);
                    }
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.note(segments, p.span().start().line);
        syn::visit::visit_path(self, p);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if is_test_module(&m.attrs) {
            return;
        }
        self.module.push(m.ident.to_string());
        self.graph.modules.insert(self.module.clone());
        match &m.content {
            Some((_, items)) => items.iter().for_each(|i| self.visit_item(i)),
            None => self.raw.push((self.module.clone(), vec!["#file".into()], 0)),
        }
        self.module.pop();
    }
}

/// Reads a crate from its root file, following `mod x;` to `x.rs` or
/// `x/mod.rs`.
fn read_crate(graph: &mut Graph, workspace: &Path, dir: &Path, root: &Path) {
    let mut pending = vec![(root.to_path_buf(), Vec::<String>::new())];
    let mut raw = Vec::new();
    while let Some((file, module)) = pending.pop() {
        let ast = parse(&file);
        let name = file.strip_prefix(workspace).unwrap_or(&file).display().to_string();
        let mut refs = Refs { graph, module: module.clone(), raw: Vec::new() };
        refs.visit_file(&ast);
        for (m, segments, line) in refs.raw {
            if segments.first().is_some_and(|s| s == "#file") {
                // `mod x;`: its file sits beside this one, or in this
                // module's own folder.
                let base = if module.is_empty() || file.ends_with("mod.rs") {
                    file.parent().map(Path::to_path_buf).unwrap_or_default()
                } else {
                    dir.join(module.join("/"))
                };
                let leaf = m.last().cloned().unwrap_or_default();
                let flat = base.join(format!("{leaf}.rs"));
                let nested = base.join(&leaf).join("mod.rs");
                let next = if flat.exists() { flat } else { nested };
                pending.push((next, m));
            } else {
                raw.push((m, segments, format!("{name}:{line}")));
            }
        }
    }
    for (from, segments, at) in raw {
        if let Some(to) = resolve(graph, &from, &segments) {
            graph.refs.entry((from, to)).or_insert(at);
        }
    }
}

/// The module a path written in `from` lands in: the longest known module
/// along it, or, where the path goes on from a module by a name that
/// module brings in with `use`, where that name leads.
fn resolve(graph: &Graph, from: &[String], segments: &[String]) -> Option<ModPath> {
    resolve_within(graph, from, segments, 8)
}

fn resolve_within(graph: &Graph, from: &[String], segments: &[String], depth: usize) -> Option<ModPath> {
    let mut target: ModPath = from.to_vec();
    let mut rest = segments;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            target.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        _ => {
            while rest.first().is_some_and(|s| s == "super") {
                target.pop()?;
                rest = &rest[1..];
            }
        }
    }
    while let Some(next) = rest.first() {
        let mut deeper = target.clone();
        deeper.push(next.clone());
        if !graph.modules.contains(&deeper) {
            break;
        }
        target = deeper;
        rest = &rest[1..];
    }
    if let (Some(name), Some(depth)) = (rest.first(), depth.checked_sub(1)) {
        if let Some(alias) = graph.aliases.get(&(target.clone(), name.clone())) {
            let mut via = alias.clone();
            via.extend(rest[1..].iter().cloned());
            if let Some(found) = resolve_within(graph, &target, &via, depth) {
                return Some(found);
            }
        }
    }
    Some(target)
}

/// The cycles among siblings: for each reference, the two children of the
/// modules' nearest common parent it connects.
fn cycles(graph: &Graph) -> Vec<String> {
    let mut edges: BTreeMap<(ModPath, ModPath), String> = BTreeMap::new();
    for ((from, to), at) in &graph.refs {
        let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
        if common < from.len() && common < to.len() {
            let a = from[..=common].to_vec();
            let b = to[..=common].to_vec();
            edges.entry((a, b)).or_insert_with(|| at.clone());
        }
    }
    let mut found = Vec::new();
    for component in strongly_connected(&edges) {
        let inside: Vec<String> = edges
            .iter()
            .filter(|((a, b), _)| component.contains(a) && component.contains(b))
            .map(|((a, b), at)| format!("  {} -> {} ({at})", a.join("::"), b.join("::")))
            .collect();
        found.push(inside.join("\n"));
    }
    found
}

/// Tarjan's strongly connected components of more than one node.
fn strongly_connected(edges: &BTreeMap<(ModPath, ModPath), String>) -> Vec<BTreeSet<ModPath>> {
    struct State<'e> {
        next: BTreeMap<&'e ModPath, Vec<&'e ModPath>>,
        index: BTreeMap<&'e ModPath, usize>,
        low: BTreeMap<&'e ModPath, usize>,
        stack: Vec<&'e ModPath>,
        out: Vec<BTreeSet<ModPath>>,
    }
    fn visit<'e>(s: &mut State<'e>, v: &'e ModPath) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        for w in s.next.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                s.low.entry(v).and_modify(|l| *l = (*l).min(lw));
            } else if s.stack.contains(&w) {
                let iw = s.index[w];
                s.low.entry(v).and_modify(|l| *l = (*l).min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                component.insert(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        next: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for (a, b) in edges.keys() {
        s.next.entry(a).or_default().push(b);
    }
    let nodes: Vec<&ModPath> = s.next.keys().copied().collect();
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_crate_has_a_module_cycle() {
    let root = connsim_tests::workspace_root();
    let mut report = Vec::new();
    for (name, dir, roots) in CRATES {
        for file in *roots {
            let mut graph = Graph::default();
            read_crate(&mut graph, &root, &root.join(dir), &root.join(dir).join(file));
            assert!(graph.modules.len() > 1 || *file == "main.rs", "{name}/{file}: found no modules");
            for cycle in cycles(&graph) {
                report.push(format!("{name} ({file}):\n{cycle}"));
            }
        }
    }
    assert!(report.is_empty(), "module cycles (one reference shown per edge):\n{}", report.join("\n"));
}

/// The check itself. Each edge comes from one kind of reference: a `use`
/// tree (`a -> b`), a macro argument (`b -> c`), a plain path in code
/// (`c -> a`), a name re-exported by the parent (`f -> g` through
/// `crate::G`), `super::` between nested siblings, a rename and a glob. A
/// doc link, a child using its parent and a test module each would close a
/// cycle if they counted, and must not.
#[test]
fn the_cycle_check_sees_uses_paths_and_macros() {
    let text = r#"
        pub use g::G;
        mod a { use crate::b::{self as bee}; }
        mod b { fn g() { format!("{}", crate::c::Y); } }
        mod c { fn h() { let _ = crate::a::X; }
                mod d { use super::e::Z; } mod e { fn i() { let _ = super::d::W; } } }
        mod f { fn j() { let _ = crate::G; } }
        mod g { pub struct G; use crate::h::*; }
        mod h { fn k() { let _ = super::f::F; } }
        mod p { /// [`crate::q`]
                fn l() {} mod child { fn n() { let _ = super::P; } } }
        mod q { fn m() { let _ = crate::p::P; } }
        mod r { #[cfg(test)] mod tests { use crate::s; } }
        mod s { use crate::r; }
    "#;
    let mut graph = Graph::default();
    let ast = syn::parse_file(text).expect("parses");
    let mut refs = Refs { graph: &mut graph, module: Vec::new(), raw: Vec::new() };
    refs.visit_file(&ast);
    let raw = std::mem::take(&mut refs.raw);
    for (from, segments, line) in raw {
        if let Some(to) = resolve(&graph, &from, &segments) {
            graph.refs.entry((from, to)).or_insert(format!("t.rs:{line}"));
        }
    }
    let found = cycles(&graph);
    let edges: Vec<Vec<&str>> =
        found.iter().map(|c| c.lines().map(|l| l.trim().split(" (").next().unwrap_or("")).collect()).collect();
    assert_eq!(
        edges,
        [vec!["a -> b", "b -> c", "c -> a"], vec!["c::d -> c::e", "c::e -> c::d"], vec!["f -> g", "g -> h", "h -> f"],],
        "{found:#?}"
    );
}

// ---- entry points ---------------------------------------------------------

/// The binaries stay thin: each subcommand is a module of its `cli/`
/// folder of at most 150 lines (arguments, loading, printing), so that a
/// newcomer finds a subcommand in one short file; `main` only parses,
/// dispatches and sets the exit code.
#[test]
fn subcommand_modules_stay_small() {
    const CLI_LIMIT: usize = 150;
    let root = connsim_tests::workspace_root();
    let mut files = Vec::new();
    for dir in ["connector/src/cli", "conformance/src/cli"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() >= 10, "found only {} subcommand modules", files.len());
    let report: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())).lines().count();
            (lines > CLI_LIMIT).then(|| format!("{}: {lines} lines", f.strip_prefix(&root).unwrap_or(f).display()))
        })
        .collect();
    assert!(report.is_empty(), "subcommand modules over {CLI_LIMIT} lines (split them):\n{}", report.join("\n"));
}
