//! TypeScript modules become JavaScript by having their types stripped: every annotation,
//! interface and type-only import is replaced by spaces (swc's strip-only mode, through deno_ast),
//! so each line and column of the JavaScript is the line and column of the `.ts` file. A syntax
//! error V8 finds, a stack trace and a log position all point into the TypeScript as written.
//! What cannot be stripped without generating code (`enum`, `namespace`, parameter properties) is
//! refused with its position, as Node.js does.

use std::collections::BTreeMap;
use std::sync::Arc;

/// A function's modules as V8 runs them: TypeScript ones stripped of their types, the rest as
/// they are. The first module that cannot be stripped is the error.
pub fn to_javascript(
  function: &str,
  modules: BTreeMap<String, Arc<str>>,
) -> Result<BTreeMap<String, Arc<str>>, String> {
  modules
    .into_iter()
    .map(|(path, source)| {
      if is_typescript(&path) {
        let js = strip_types(function, &path, &source)?;
        Ok((path, Arc::from(js)))
      } else {
        Ok((path, source))
      }
    })
    .collect()
}

/// Whether `path` names a TypeScript module.
fn is_typescript(path: &str) -> bool {
  path.ends_with(".ts") || path.ends_with(".mts")
}

/// The JavaScript of TypeScript module `path` of function `function`, or the first error as
/// `hello/index.ts:3:14: SyntaxError: …`.
fn strip_types(function: &str, path: &str, source: &str) -> Result<String, String> {
  use deno_ast::diagnostics::Diagnostic;
  let url = deno_ast::ModuleSpecifier::parse(&format!("islet://{function}/{path}"))
    .map_err(|e| format!("{function}/{path}: {e}"))?;
  // The stripper reports a syntax error without its position; the parser has it.
  let parsed = deno_ast::parse_module(deno_ast::ParseParams {
    specifier: url.clone(),
    text: source.into(),
    media_type: deno_ast::MediaType::TypeScript,
    capture_tokens: false,
    scope_analysis: false,
    maybe_syntax: None,
  });
  if let Err(diagnostic) = parsed {
    let at = diagnostic.display_position();
    return Err(format!(
      "{function}/{path}:{}:{}: SyntaxError: {}",
      at.line_number,
      at.column_number,
      diagnostic.message()
    ));
  }
  deno_ast::type_strip(&url, source.to_string(), deno_ast::TypeStripOptions { module: Some(true) })
    .map_err(|e| format!("{function}/{path}: {e} (only type annotations can be stripped: write enums and namespaces as plain JavaScript)"))
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn types_become_spaces_and_positions_stay() {
    let js = strip_types("f", "index.ts", "const x: number = 5;\nexport default x;\n").unwrap();
    assert_eq!(js, "const x         = 5;\nexport default x;\n");
  }

  #[test]
  fn errors_carry_the_typescript_position() {
    let err = strip_types("f", "index.ts", "const ok = 1;\nlet x: = 5;\n").unwrap_err();
    assert!(err.starts_with("f/index.ts:2:"), "{err}");
    assert!(err.contains("SyntaxError"), "{err}");
    let err = strip_types("f", "index.ts", "enum Colour { Red }\n").unwrap_err();
    assert!(err.starts_with("f/index.ts: "), "{err}");
  }
}
