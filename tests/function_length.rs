//! No function in the three crates' sources is longer than 100 lines
//! (unit tests aside): a long function carries a whole story that should
//! be told in named parts. Measured from `fn` to the closing brace, by
//! parsing the sources with `syn`.

use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::Visit;

const LIMIT: usize = 100;

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

    /// Unit tests may be as long as their story.
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let test_only =
            m.attrs.iter().any(|a| a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test"));
        if !test_only {
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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in ["connector/src", "relay-sim/src", "conformance/src"] {
        rust_files(&root.join(krate), &mut files);
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut long = Long::default();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        long.file = f.strip_prefix(&root).unwrap_or(&f).to_path_buf();
        long.visit_file(&ast);
    }
    let report: Vec<String> =
        long.found.iter().map(|(f, line, name, n)| format!("{}:{line} {name}: {n} lines", f.display())).collect();
    assert!(report.is_empty(), "functions over {LIMIT} lines (split them):\n{}", report.join("\n"));
}

/// The measure itself: a function of 101 lines is found, one of 100 is not,
/// and nothing in a test module counts.
#[test]
fn the_measure_counts_from_fn_to_the_closing_brace() {
    let body = |n: usize| (0..n - 2).map(|i| format!("    let _x{i} = {i};\n")).collect::<String>();
    let text = format!(
        "fn long() {{\n{}}}\nfn ok() {{\n{}}}\n#[cfg(test)]\nmod tests {{\n    fn t() {{\n{}    }}\n}}\n",
        body(101),
        body(100),
        body(200)
    );
    let mut long = Long::default();
    long.visit_file(&syn::parse_file(&text).expect("parses"));
    let names: Vec<(&str, usize)> = long.found.iter().map(|(_, _, n, l)| (n.as_str(), *l)).collect();
    assert_eq!(names, [("long", 101)]);
}
