//! foundry's top-level modules form no cycle: each names (`crate::x`, in a path or a `use`) only
//! modules that do not name it back, however indirectly, so each can be read, and changed, from
//! the bottom up. Test modules are left out; they may reach anywhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use syn::visit::Visit;

/// The module each top-level name of `lib.rs` stands for: its `mod`s, and its re-exports.
fn top_level(lib: &syn::File) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for item in &lib.items {
        match item {
            syn::Item::Mod(module) => {
                names.insert(module.ident.to_string(), module.ident.to_string());
            }
            syn::Item::Use(re_export) => {
                if let syn::UseTree::Path(path) = &re_export.tree {
                    for name in leaves(&path.tree) {
                        names.insert(name, path.ident.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    names
}

/// The names a `use` tree ends in.
fn leaves(tree: &syn::UseTree) -> Vec<String> {
    match tree {
        syn::UseTree::Path(path) => leaves(&path.tree),
        syn::UseTree::Name(name) => vec![name.ident.to_string()],
        syn::UseTree::Rename(rename) => vec![rename.rename.to_string()],
        syn::UseTree::Group(group) => group.items.iter().flat_map(leaves).collect(),
        syn::UseTree::Glob(_) => Vec::new(),
    }
}

/// The first segment after `crate::` of every path and `use` in a file, outside test modules.
#[derive(Default)]
struct Named(BTreeSet<String>);

impl Named {
    /// The modules a `use` tree names after `crate::` (`after_crate`: the tree is below it).
    fn add_use(&mut self, tree: &syn::UseTree, after_crate: bool) {
        match tree {
            syn::UseTree::Path(path) if after_crate => {
                self.0.insert(path.ident.to_string());
            }
            syn::UseTree::Path(path) => self.add_use(&path.tree, path.ident == "crate"),
            syn::UseTree::Name(name) if after_crate => {
                self.0.insert(name.ident.to_string());
            }
            syn::UseTree::Rename(rename) if after_crate => {
                self.0.insert(rename.ident.to_string());
            }
            syn::UseTree::Group(group) => {
                for item in &group.items {
                    self.add_use(item, after_crate);
                }
            }
            _ => {}
        }
    }
}

impl<'ast> Visit<'ast> for Named {
    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        let is_test = module.attrs.iter().any(|attribute| {
            attribute.path().is_ident("cfg")
                && attribute
                    .parse_args::<syn::Ident>()
                    .is_ok_and(|ident| ident == "test")
        });
        if !is_test {
            syn::visit::visit_item_mod(self, module);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.add_use(&item.tree, false);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if let (Some(first), Some(second)) = (segments.next(), segments.next())
            && first.ident == "crate"
        {
            self.0.insert(second.ident.to_string());
        }
        syn::visit::visit_path(self, path);
    }
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

/// A source file's syntax tree; a file that does not parse fails the test, naming it.
fn parse(path: &Path) -> syn::File {
    syn::parse_file(&fs::read_to_string(path).unwrap())
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Which top-level modules each top-level module names.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let names = top_level(&parse(&src.join("lib.rs")));
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = Path::new(first).with_extension("");
        let module = module.to_str().unwrap().to_owned();
        if module == "lib" {
            continue;
        }
        let mut named = Named::default();
        named.visit_file(&parse(&file));
        let targets = graph.entry(module.clone()).or_default();
        for name in named.0 {
            match names.get(&name) {
                Some(target) if *target != module => {
                    targets.insert(target.clone());
                }
                Some(_) => {}
                None => panic!("{}: crate::{name} is not a top-level name", file.display()),
            }
        }
    }
    graph
}

/// A cycle through `from`, if there is one: the modules in order, `from` first and last.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let last = path.last().unwrap().clone();
        for next in graph.get(&last).into_iter().flatten() {
            if *next == path[0] {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_owned()];
    walk(graph, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn the_modules_form_no_cycle() {
    let graph = module_graph();
    assert!(
        graph["telemetry"].contains("span_export") && graph["http"].contains("telemetry"),
        "the graph misses what the code plainly names: {graph:#?}"
    );
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|module| cycle_from(&graph, module))
        .map(|cycle| cycle.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}
